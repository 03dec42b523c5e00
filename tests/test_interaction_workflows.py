"""Interaction sequences through every door: `selfmeta pretrain` on a CSV log, `evaluate --protocol ranking`
and `--protocol coldstart`, `selfmeta recommend` and its errors, the Recommender API, and MovieLens 100k
(shared data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared
from sklearn.base import clone

from selfmeta import Recommender
from selfmeta.cli import main
from selfmeta.data import load_data
from selfmeta.errors import SelfmetaError

USERS, ITEMS = 60, 20
FLAGS = ("--user-column", "u", "--item-column", "i", "--time-column", "t")
TINY = ("encoder.dim=16", "encoder.depth=1", "encoder.heads=1")


def sequences(users: int = USERS, seed: int = 0) -> list[list[str]]:
    """Each user walks the 20 items in order from a random start (m7 is followed by m8): 5 to 12 items, no
    repeats, so the next item is predictable from the last one."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(users):
        start, n = int(rng.integers(0, ITEMS)), int(rng.integers(5, 13))
        out.append([f"m{(start + j) % ITEMS}" for j in range(n)])
    return out


def write_log(path, seqs) -> None:
    """One row per interaction, user u<k>, times counting up, the rows shuffled."""
    rng = np.random.default_rng(1)
    lines = [f"u{k},{item},{1000 + 10 * j}" for k, seq in enumerate(seqs) for j, item in enumerate(seq)]
    path.write_text("u,i,t\n" + "\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n")


def one_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def user_error(proc, fragment: str = "") -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short SASRec run on the log; (run folder, log path, the users' sequences)."""
    folder = tmp_path_factory.mktemp("interactions")
    seqs = sequences()
    log = folder / "log.csv"
    write_log(log, seqs)
    out = folder / "run"
    assert main(["pretrain", "--data", str(log), *FLAGS, "--method", "sasrec", "--out", str(out), "--steps", "30",
                 "--no-progress", *TINY]) == 0
    return out, log, seqs


def test_pretrain_from_the_command_line(cli, tmp_path):
    write_log(tmp_path / "log.csv", sequences(30))
    proc = cli("pretrain", "--data", "log.csv", *FLAGS, "--method", "sasrec", "--out", "run", "--steps", "5",
               "--no-progress", *TINY, check=True)
    result = one_json(proc.stdout)
    assert result["steps"] == 5 and np.isfinite(result["final_loss"])
    saved = json.loads((tmp_path / "run" / "items.json").read_text())
    assert sorted(saved["items"]) == sorted(f"m{i}" for i in range(ITEMS))


def test_evaluate_ranking(cli, run):
    folder, log, _ = run
    proc = cli("evaluate", folder, "--data", log, *FLAGS, "--protocol", "ranking", check=True)
    result = one_json(proc.stdout)
    assert result["protocol"] == "ranking" and result["users"] == USERS and result["items"] == ITEMS
    assert result["split"] == "test" and result["unseen_targets"] == 0
    for scores in (result, result["sampled_100"], result["popularity"], result["popularity"]["sampled_100"]):
        assert 0 <= scores["ndcg@10"] <= scores["hr@10"] <= 1
    # fewer than 100 items: the sampled ranking is the full one
    assert result["sampled_100"] == {"hr@10": result["hr@10"], "ndcg@10": result["ndcg@10"]}
    assert one_json((folder / "metrics.json").read_text()) == result


def test_evaluate_ranking_prints_strict_json(run, capsys):
    folder, log, _ = run
    assert main(["evaluate", str(folder), "--data", str(log), *FLAGS, "--protocol", "ranking"]) == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]

    def refuse(constant):
        raise ValueError(f"{constant} is no JSON number")

    json.loads(text, parse_constant=refuse)


def test_recommend(cli, run):
    folder, log, seqs = run
    proc = cli("recommend", folder, "--data", log, *FLAGS, "--user", "u4", "--k", "3", check=True)
    result = one_json(proc.stdout)
    assert result["user"] == "u4" and result["history"] == len(seqs[4])
    items = [entry["item"] for entry in result["items"]]
    assert len(items) == 3 == len(set(items))
    assert set(items) <= {f"m{i}" for i in range(ITEMS)} and not set(items) & set(seqs[4])
    scores = [entry["score"] for entry in result["items"]]
    assert scores == sorted(scores, reverse=True)
    user_error(cli("recommend", folder, "--data", log, *FLAGS, "--user", "nobody"), "user 'nobody' does not exist")
    user_error(cli("recommend", folder, "--data", log, *FLAGS, "--user", "u4", "--k", "0"), "--k must be at least 1")


def test_recommend_can_include_seen_items_and_lists_what_is_left(run, capsys):
    folder, log, seqs = run
    assert main(["recommend", str(folder), "--data", str(log), *FLAGS, "--user", "u4", "--k", "50"]) == 0
    items = [entry["item"] for entry in one_json(capsys.readouterr().out)["items"]]
    assert len(items) == ITEMS - len(set(seqs[4]))                          # all the unseen items, no more
    assert main(["recommend", str(folder), "--data", str(log), *FLAGS, "--user", "u4", "--k", "50",
                 "--include-seen"]) == 0
    assert len(one_json(capsys.readouterr().out)["items"]) == ITEMS


def test_evaluate_coldstart(run, capsys):
    folder, log, _ = run
    assert main(["evaluate", str(folder), "--data", str(log), *FLAGS, "--protocol", "coldstart", "--shots", "2",
                 "--users", "all", "--split", "all"]) == 0
    result = one_json(capsys.readouterr().out)
    assert result["protocol"] == "coldstart" and result["adapt"] == "none" and result["users"] == USERS
    for scores in (result, result["popularity"]):
        assert 0 <= scores["next_ndcg@10"] <= scores["next_hr@10"] <= 1 and 0 <= scores["recall@10"] <= 1
    assert main(["evaluate", str(folder), "--data", str(log), *FLAGS, "--protocol", "coldstart", "--shots", "2",
                 "--split", "all", "--adapt", "finetune", "steps=2", "lr=0.5"]) == 0
    tuned = one_json(capsys.readouterr().out)
    assert tuned["adapt"] == "finetune" and tuned["steps"] == 2 and tuned["lr"] == 0.5
    assert main(["evaluate", str(folder), "--data", str(log), *FLAGS, "--protocol", "coldstart", "--adapt", "meta"]) == 2
    assert "needs a run of the coldstart method" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--data", str(log), *FLAGS, "--protocol", "coldstart", "k=3"]) == 2
    assert "takes steps=N" in capsys.readouterr().err


def test_ranking_protocols_refuse_runs_of_other_data(tmp_path, capsys):
    digits = tmp_path / "digits-run"
    assert main(["pretrain", "--data", "digits", "--encoder", "mlp", "--out", str(digits), "--steps", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    for protocol in ("ranking", "coldstart"):
        assert main(["evaluate", str(digits), "--data", "digits", "--protocol", protocol]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "interactions" in err


def test_the_recommender_api(tmp_path):
    seqs = sequences()
    model = Recommender(time_budget=None, epochs=2, max_length=12, encoder_options={"dim": 16, "depth": 1, "heads": 1})
    assert model.fit(seqs) is model
    histories = [s[:-1] for s in seqs[:10]]
    ids, scores = model.recommend(histories, k=4)
    assert ids.shape == scores.shape == (10, 4) and ids.dtype == object
    for history, row, row_scores in zip(histories, ids, scores):
        assert len(set(row)) == 4 and not set(row) & set(history) and set(row) <= {f"m{i}" for i in range(ITEMS)}
        assert list(row_scores) == sorted(row_scores, reverse=True)
    seen, _ = model.recommend(histories, k=ITEMS, exclude_seen=False)
    assert all(sorted(row) == sorted(f"m{i}" for i in range(ITEMS)) for row in seen)
    assert 0.0 <= model.score(seqs) <= 1.0
    assert model.transform(histories).shape == (10, 16)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "backbone_")
    model.save(tmp_path / "rec.safetensors")
    again = Recommender.load(tmp_path / "rec.safetensors")
    assert isinstance(again, Recommender) and again.max_length == 12
    again_ids, again_scores = again.recommend(histories, k=4)
    assert (again_ids == ids).all() and np.allclose(again_scores, scores, atol=1e-5)
    for bad, message in ((0, "k must be a whole number"), (2.5, "k must be a whole number")):
        with pytest.raises(SelfmetaError, match=message):
            model.recommend(histories, k=bad)
    with pytest.raises(SelfmetaError, match="non-empty sequence"):
        model.recommend([["m1"], []])


def test_recommend_leaves_out_the_whole_history():
    seqs = sequences()
    model = Recommender(time_budget=None, epochs=1, max_length=4, encoder_options={"dim": 16, "depth": 1, "heads": 1})
    model.fit(seqs)
    histories = [s for s in seqs if len(s) >= 10][:10]
    ids, scores = model.recommend(histories, k=ITEMS)
    for history, row, row_scores in zip(histories, ids, scores):
        listed = {item for item, score in zip(row, row_scores) if np.isfinite(score)}
        assert listed == {f"m{i}" for i in range(ITEMS)} - set(history)


@pytest.mark.shared_data
def test_movielens_100k_loads_whole():
    path = shared("movielens-100k/ml-100k")
    test = load_data(path, "test")
    assert len(test) == 943 and sum(len(r) for r in test.raw) == 100_000
    train = load_data(path, "train")
    assert sum(len(r) for r in train.raw) == 100_000 - 2 * 943
    assert len(test.info) == 1682 and test.info["1"]["name"] == "Toy Story (1995)"
