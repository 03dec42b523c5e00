"""The ``selfmeta`` command, run the way a user types it (a subprocess in a scratch folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXE = shutil.which("selfmeta") or str(Path(sys.executable).with_name("selfmeta"))
DIGITS_TRAIN, DIGITS_ALL = 1438, 1797


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Two cores shared with other test runs: one intra-op thread per process is much faster."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run_selfmeta(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """As the ``cli`` fixture, for module-scoped fixtures."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``selfmeta pretrain`` on digits for 2 epochs: (working folder, completed process, run directory)."""
    cwd = tmp_path_factory.mktemp("pretrain")
    proc = run_selfmeta(cwd, "pretrain", "--data", "digits", "--out", "run", "--epochs", "2", "batch_size=128",
                        "views.hflip=0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return cwd, proc, cwd / "run"


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run (tests that write into it do not disturb the others)."""
    return Path(shutil.copytree(trained[2], tmp_path / "run_copy"))


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def one_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def metric_steps(run: Path) -> list[int]:
    """The steps of the training records (the label-free quality records are apart: no loss)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr starting with 'error:', no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_csv(path: Path, rows: int = 240, nan: bool = False) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], rows // 3)
    centers = {"a": 0.0, "b": 3.0, "c": -3.0}
    lines = ["x0,x1,x2,x3,x4,label"]
    for i, label in enumerate(labels):
        values = rng.normal(centers[label], 1.0, 5)
        cells = [f"{v:.5f}" for v in values]
        if nan and i == 17:
            cells[2] = ""
        lines.append(",".join(cells) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- commands


def test_list_shows_formats_encoders_methods(cli):
    proc = cli("list", check=True)
    out = proc.stdout
    sections = ("data formats:", "training options", "modalities, with their views", "encoders (encoder.NAME", "methods (selfmeta pretrain",
                "meta-learners (selfmeta metatrain", "task constructors", "evaluation protocols:", "few-shot adaptations")
    for section in sections:
        assert section in out
    formats = out.split("data formats:")[1].split("training options")[0]
    for name in ("csv", "digits", "idx", "imagefolder", "parquet", "cifar", "omniglot"):
        assert f"  {name} " in formats
    training = out.split("training options")[1].split("modalities, with their views")[0]
    assert "batch_size=null  (null or an integer >= 2)" in training and "precision=auto  (one of: auto, fp32, bf16)" in training
    views = out.split("modalities, with their views")[1].split("encoders (encoder.NAME")[0]
    assert "hflip=0.5  (a number >= 0 and <= 1)" in views and "swap=0.15" in views and "time_warp=0.2" in views
    for name in ("image", "series", "table"):
        assert f"  {name} " in views
    encoders = out.split("encoders (encoder.NAME")[1].split("methods (")[0]
    for name in ("conv4", "mlp", "resnet18", "resnet1d", "ts2vec"):
        assert f"  {name} " in encoders
    assert "width=64  (an integer >= 1)" in encoders
    methods = out.split("methods (selfmeta pretrain")[1].split("meta-learners")[0]
    assert "  simclr " in methods and "temperature=0.5  (a number > 0)" in methods
    learners = out.split("meta-learners (selfmeta metatrain")[1].split("task constructors")[0]
    for name in ("protonet", "maml", "fomaml", "metasgd", "reptile", "triplet", "contrastive"):
        assert f"  {name} " in learners
    assert "inner_steps=1" in learners and "distance=euclidean  (one of: euclidean, cosine)" in learners
    assert "clusters=500  (an integer >= 2)" in out.split("task constructors")[1]
    assert "linear, knn, svm, cluster, fewshot" in out


def test_pretrain_writes_a_complete_run(trained):
    _, proc, run = trained
    for name in ("config.json", "checkpoint.pt", "encoder.safetensors", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "tensorboard").is_dir() and any((run / "tensorboard").iterdir())
    summary = one_json(proc.stdout)
    assert summary["steps"] == 2 * (DIGITS_TRAIN // 128) and summary["stopped_by"] == "epochs"
    assert summary["run_dir"] == "run" and np.isfinite(summary["final_loss"])
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["batch_size"] == 128 and record["config"]["epochs"] == 2
    assert record["config"]["view_options"] == {"hflip": 0} and record["config"]["encoder"] == "conv4"
    assert record["data"]["path"] == "digits" and record["data"]["items"] == DIGITS_TRAIN
    assert len(record["commands"]) == 1 and "pretrain" in record["commands"][0]
    steps = metric_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == summary["steps"]
    assert "Traceback" not in proc.stderr


def test_evaluate_linear_prints_one_json_and_saves_it(cli, run_copy):
    proc = cli("evaluate", run_copy, "--data", "digits", "--protocol", "linear", check=True)
    result = one_json(proc.stdout)
    assert result["protocol"] == "linear" and result["split"] == "test"
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["accuracy"] > 0.3  # 10 classes: far above chance even after 2 epochs
    assert json.loads((run_copy / "metrics.json").read_text()) == result
    assert json.loads((run_copy / "evaluations.jsonl").read_text().splitlines()[-1]) == result


def test_evaluate_knn_with_few_labels(cli, run_copy):
    proc = cli("evaluate", run_copy, "--data", "digits", "--protocol", "knn", "--labels-per-class", "5", check=True)
    result = one_json(proc.stdout)
    assert result["protocol"] == "knn" and result["labels_per_class"] == 5 and result["seeds"] == 5
    assert 0.0 <= result["accuracy"] <= 1.0 and result["accuracy_std"] >= 0.0
    assert json.loads((run_copy / "metrics.json").read_text()) == result


def test_evaluate_cluster(cli, run_copy):
    proc = cli("evaluate", run_copy, "--data", "digits", "--protocol", "cluster", check=True)
    result = one_json(proc.stdout)
    assert result["protocol"] == "cluster"
    assert 0.0 <= result["nmi"] <= 1.0 and -1.0 <= result["ari"] <= 1.0
    assert json.loads((run_copy / "metrics.json").read_text()) == result


def test_embed_npy_and_parquet(cli, trained, tmp_path):
    run = trained[2]
    proc = cli("embed", run, "--data", "digits", "--out", "f.npy", check=True)
    assert one_json(proc.stdout) == {"out": "f.npy", "items": DIGITS_ALL, "features": 64}
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (DIGITS_ALL, 64) and features.dtype == np.float32 and np.isfinite(features).all()

    cli("embed", run, "--data", "digits", "--out", "f.parquet", check=True)
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "f.parquet")
    assert frame.shape == (DIGITS_ALL, 65)
    assert list(frame.columns[:64]) == [f"f{i}" for i in range(64)] and frame.columns[64] == "label"
    np.testing.assert_allclose(frame.iloc[:, :64].to_numpy(), features, rtol=1e-6, atol=1e-6)
    assert sorted(frame["label"].unique()) == [str(d) for d in range(10)]


def test_csv_table_pretrains_with_mlp_and_evaluates(cli, tmp_path):
    write_csv(tmp_path / "table.csv")
    cli("pretrain", "--data", "table.csv", "--out", "trun", "--epochs", "2", "batch_size=32", "--no-progress",
        check=True)
    record = json.loads((tmp_path / "trun" / "config.json").read_text())
    assert record["config"]["encoder"] == "mlp" and record["modality"] == "table" and record["input_shape"] == [5]
    result = one_json(cli("evaluate", "trun", "--data", "table.csv", "--protocol", "linear", check=True).stdout)
    assert result["protocol"] == "linear" and 0.0 <= result["accuracy"] <= 1.0
    assert result["accuracy"] > 0.6  # three well separated blobs


def test_resume_continues_a_run(cli, run_copy):
    before = metric_steps(run_copy)
    proc = cli("pretrain", "--data", "digits", "--out", run_copy, "--resume", "--epochs", "3", "--no-progress",
               check=True)
    summary = one_json(proc.stdout)
    assert summary["steps"] == 3 * (DIGITS_TRAIN // 128) > before[-1]
    import torch

    assert torch.load(run_copy / "checkpoint.pt", weights_only=True)["step"] == summary["steps"]
    steps = metric_steps(run_copy)
    assert steps[: len(before)] == before and steps == sorted(set(steps)) and steps[-1] == summary["steps"]
    record = json.loads((run_copy / "config.json").read_text())
    assert record["config"]["epochs"] == 3 and record["config"]["batch_size"] == 128  # the run's own options
    assert len(record["commands"]) == 2 and "--resume" in record["commands"][1]  # start and resume recorded


@pytest.mark.slow
def test_quickstart(cli, tmp_path):
    proc = cli("quickstart", "--out", "q", "--epochs", "3", check=True)
    assert "raw pixels" in proc.stdout and "selfmeta SimCLR" in proc.stdout and "k-means NMI" in proc.stdout
    for name in ("loss_curve.png", "embedding_tsne.png"):
        data = (tmp_path / "q" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    results = json.loads((tmp_path / "q" / "results.json").read_text())["results"]
    assert set(results) == {"raw pixels", "selfmeta SimCLR"}
    assert all(0.0 <= v <= 1.0 for row in results.values() for v in row.values())
    assert (tmp_path / "q" / "encoder.safetensors").is_file()


# ------------------------------------------------------------------------------------------- bad input


def pretrain_args(*extra: str) -> list[str]:
    return ["pretrain", "--out", "run", "--epochs", "1", "--no-progress", *extra]


@pytest.mark.parametrize("extra, fragments", [
    (["--data", "missing_folder"], ["no such file or folder", "missing_folder"]),
    (["--data", "digits", "--format", "tiff"], ["unknown data format 'tiff'", "csv", "imagefolder"]),
    (["--data", "digits", "--method", "byol-ish"], ["unknown method 'byol-ish'", "simclr"]),
    (["--data", "digits", "--encoder", "conv5"], ["unknown encoder 'conv5'", "conv4", "mlp", "resnet18"]),
    (["--data", "digits", "colour=1"], ["unknown option 'colour'", "batch_size", "epochs"]),
    (["--data", "digits", "optimizer=foo"], ["option optimizer takes one of: adamw, lars, got 'foo'"]),
    (["--data", "digits", "batch_size=5000"], ["larger than the data", "1438"]),
])
def test_pretrain_bad_input(cli, tmp_path, extra, fragments):
    assert_user_error(cli(*pretrain_args(*extra)), *fragments)
    assert not (tmp_path / "run").exists()


def test_pretrain_csv_with_nan(cli, tmp_path):
    write_csv(tmp_path / "table.csv", nan=True)
    assert_user_error(cli(*pretrain_args("--data", "table.csv")), "NaN")
    assert not (tmp_path / "run").exists()


def test_pretrain_corrupt_png(cli, tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert_user_error(cli(*pretrain_args("--data", "images")), "broken.png", "corrupt")
    assert not (tmp_path / "run").exists()


def test_pretrain_refuses_an_existing_run_without_resume(cli, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"config": {}}')
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"a resumable run")
    before = tree(tmp_path / "run")
    assert_user_error(cli(*pretrain_args("--data", "digits")), "already holds a run", "pass --resume")
    assert tree(tmp_path / "run") == before
    (tmp_path / "run" / "checkpoint.pt").unlink()
    (tmp_path / "run" / "notes.txt").write_text("keep me")  # not a run's file: the folder is never taken over
    before = tree(tmp_path / "run")
    assert_user_error(cli(*pretrain_args("--data", "digits")), "already exists and holds files of its own (notes.txt)")
    assert tree(tmp_path / "run") == before


def test_resume_without_checkpoint(cli, tmp_path):
    assert_user_error(cli(*pretrain_args("--data", "digits", "--resume")), "there is no run in run to resume")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    before = tree(tmp_path / "run")
    assert_user_error(cli(*pretrain_args("--data", "digits", "--resume")), "holds files of its own (notes.txt)")
    assert tree(tmp_path / "run") == before


def test_evaluate_too_many_labels_per_class(cli, run_copy):
    before = tree(run_copy)
    proc = cli("evaluate", run_copy, "--data", "digits", "--protocol", "linear", "--labels-per-class", "1000")
    assert_user_error(proc, "1000 labels per class", "only")
    assert tree(run_copy) == before


def test_evaluate_a_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "readme.txt").write_text("hello")
    proc = cli("evaluate", "notarun", "--data", "digits", "--protocol", "linear")
    assert_user_error(proc, "encoder.safetensors")
    assert sorted(p.name for p in (tmp_path / "notarun").iterdir()) == ["readme.txt"]


def test_embed_bad_suffix(cli, trained, tmp_path):
    assert_user_error(cli("embed", trained[2], "--data", "digits", "--out", "f.txt"), ".npy or .parquet")
    assert not (tmp_path / "f.txt").exists()
    assert list(tmp_path.iterdir()) == []


def test_options_and_flags_in_any_order(cli, tmp_path):
    # key=value options after flags, between flags and before them: as users type them.
    proc = cli("pretrain", "batch_size=128", "--data", "digits", "--out", "run", "--no-progress", "views.hflip=0",
               "--epochs", "1", "log_every=1", check=True)
    assert one_json(proc.stdout)["steps"] == DIGITS_TRAIN // 128
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["batch_size"] == 128 and config["view_options"] == {"hflip": 0} and config["log_every"] == 1


def test_usage_errors_are_one_line(cli):
    assert_user_error(cli("pretrain", "--data", "digits", "--out", "run", "--epochs", "1", "--bogus"), "--bogus")
    assert_user_error(cli("pretrain", "--data", "digits", "--out", "run", "--epochs", "x"), "invalid int value")
    assert_user_error(cli("evaluate", "run", "--data", "digits", "--protocol", "linear", "oops=1"), "oops=1")
    assert_user_error(cli("frobnicate"), "invalid choice")
