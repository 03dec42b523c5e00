"""``selfmeta metatrain`` and ``selfmeta evaluate --protocol fewshot`` run the way a user types them."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import assert_user_error, one_json, run_selfmeta

from selfmeta.cli import build_parser, cmd_evaluate, main
from selfmeta.errors import SelfmetaError


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("metatrain")
    proc = run_selfmeta(cwd, "metatrain", "--data", "digits", "--method", "protonet", "--ways", "5", "--shots", "1",
                        "--queries", "5", "--steps", "40", "--tasks-per-step", "4", "--out", "run", "--no-progress",
                        "log_every=10")
    assert proc.returncode == 0, proc.stderr
    return cwd, proc, cwd / "run"


def test_metatrain_writes_a_complete_run(protonet_run):
    _, proc, run = protonet_run
    summary = one_json(proc.stdout)
    assert summary["steps"] == 40 and summary["stopped_by"] == "steps"
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["tasks"] == "labels" and config["method"] == "protonet"
    assert (config["ways"], config["shots"], config["queries"], config["tasks_per_step"]) == (5, 1, 5, 4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [10, 20, 30, 40] and "accuracy" in losses[-1]
    assert records[-1]["step"] == 40 and records[-1]["rankme"] > 1  # the label-free quality of the final weights
    assert (run / "checkpoint.pt").is_file() and (run / "encoder.safetensors").is_file()


@pytest.mark.parametrize("adapt", ["prototype", "logreg", "finetune"])
def test_evaluate_fewshot_prints_one_json_and_saves_it(protonet_run, adapt):
    cwd, _, run = protonet_run
    proc = run_selfmeta(cwd, "evaluate", "run", "--data", "digits", "--split", "test", "--protocol", "fewshot",
                        "--ways", "5", "--shots", "1", "--queries", "5", "--episodes", "300", "--adapt", adapt)
    assert proc.returncode == 0, proc.stderr
    result = one_json(proc.stdout)
    assert {"protocol": "fewshot", "ways": 5, "shots": 1, "episodes": 300, "adapt": adapt}.items() <= result.items()
    assert 0.6 < result["accuracy"] <= 1.0 and 0 < result["ci95"] < 0.05  # chance is 0.2
    assert json.loads((run / "metrics.json").read_text()) == result


def test_a_pretrained_encoder_is_scored_by_the_same_protocol(tmp_path):
    proc = run_selfmeta(tmp_path, "pretrain", "--data", "digits", "--out", "ssl", "--epochs", "1", "batch_size=128",
                        "views.hflip=0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_selfmeta(tmp_path, "evaluate", "ssl", "--data", "digits", "--protocol", "fewshot", "--queries", "5",
                        "--episodes", "100", "--adapt", "finetune")
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc.stdout)["adaptation"] == "finetune"  # a head on frozen features: no learner to adapt


@pytest.mark.parametrize("method", ["maml", "fomaml", "metasgd", "reptile", "triplet", "contrastive"])
def test_every_meta_learner_trains_from_the_cli(tmp_path, method):
    proc = run_selfmeta(tmp_path, "metatrain", "--data", "digits", "--method", method, "--queries", "3", "--steps",
                        "3", "--tasks-per-step", "2", "--out", "run", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_selfmeta(tmp_path, "evaluate", "run", "--data", "digits", "--protocol", "fewshot", "--queries", "3",
                        "--episodes", "20", "--adapt", "finetune")
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc.stdout)["adaptation"] == f"{method} adaptation"


@pytest.mark.parametrize("args,fragments", [
    (["--shots", "200"], ["fewer than shots + queries"]),
    (["--ways", "11"], ["11-way episodes need at least 11 classes"]),
    (["--method", "simclr"], ["unknown meta-learner 'simclr'"]),
    (["method.inner_steps=2"], ["unknown option 'inner_steps' for meta-learner 'protonet'; valid: distance, scale"]),
    (["--method", "memory", "--ways", "5", "--queries", "5", "method.size=10"],
     ["memory of 10 slots is smaller than one episode of 30 items"]),
])
def test_metatrain_bad_input(tmp_path, args, fragments):
    proc = run_selfmeta(tmp_path, "metatrain", "--data", "digits", "--steps", "2", "--out", "run", "--no-progress", *args)
    assert_user_error(proc, *fragments)
    assert not (tmp_path / "run").exists()


def test_evaluate_fewshot_bad_input(protonet_run):
    cwd = protonet_run[0]
    base = ["evaluate", "run", "--data", "digits", "--protocol", "fewshot"]
    assert_user_error(run_selfmeta(cwd, *base, "--adapt", "knn"), "unknown adaptation 'knn'")
    assert_user_error(run_selfmeta(cwd, *base, "--shots", "40"), "fewer than shots + queries")


def test_tasks_without_labels_say_the_labels_are_ignored(tmp_path):
    proc = run_selfmeta(tmp_path, "metatrain", "--data", "digits", "--tasks", "umtra", "--queries", "2", "--steps", "3",
                        "--tasks-per-step", "2", "--out", "run", "--no-progress", "views.hflip=0")
    assert proc.returncode == 0, proc.stderr
    assert "umtra tasks are built without labels: the data's labels are ignored" in proc.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["tasks"] == "umtra"
    assert_user_error(run_selfmeta(tmp_path, "metatrain", "--data", "digits", "--tasks", "nope", "--out", "x"),
                      "unknown task constructor 'nope'")


def test_episode_cluster_scores_any_run_and_a_metacluster_run_by_its_own_clustering(tmp_path, protonet_run, capsys):
    cwd, _, run = protonet_run
    base = ["evaluate", "run", "--data", "digits", "--protocol", "episode-cluster", "--ways", "5", "--shots", "5",
            "--episodes", "100"]
    result = one_json(run_selfmeta(cwd, *base).stdout)
    assert {"protocol": "episode-cluster", "ways": 5, "shots": 5, "clustering": "k-means"}.items() <= result.items()
    assert 0.5 < result["accuracy"] <= 1 and 0.4 < result["nmi"] <= 1 and result["accuracy_ci95"] > 0
    for args, fragment in ((["--adapt", "finetune"], "has none (a metacluster run does)"),
                           (["--queries", "3"], "has no queries"),
                           (["--protocol", "fewshot", "--queries", "0"], "queries must be an integer >= 1, got 0")):
        with pytest.raises(SelfmetaError, match=re.escape(fragment)):  # in-process: no start-up per case
            cmd_evaluate(build_parser().parse_args([*base[:1], str(run), *base[2:], *args]))
    # a metacluster run, trained and scored in-process (the commands above ran as a user types them)
    assert main(["metatrain", "--data", "digits", "--method", "metacluster", "--queries", "3", "--steps", "3",
                 "--tasks-per-step", "2", "--out", str(tmp_path / "mc"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*base[:1], str(tmp_path / "mc"), *base[2:], "--adapt", "finetune"]) == 0
    result = one_json(capsys.readouterr().out)
    assert result["clustering"] == "metacluster clustering" and 0.2 < result["accuracy"] <= 1
