"""The anomaly commands as a user types them: ``pretrain --only-class``, ``evaluate --protocol anomaly``,
``detect`` on items and on one long series, ``nab`` (a subprocess of the ``selfmeta`` entry point on a tiny
synthetic NAB folder) and ``list``; every bad input is exit status 2 and one ``error:`` line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfmeta.cli import main, stream_detectors
from selfmeta.errors import SelfmetaError

EXE = shutil.which("selfmeta") or str(Path(sys.executable).with_name("selfmeta"))
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--steps", "2", "--no-progress", "batch_size=16"]
TABLE_ROWS = 150                     # 50 items of each of the classes a, b, c
SERIES_ROWS = 300


# --------------------------------------------------------------------------------------------- data


def write_table(path: Path, classes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    """TABLE_ROWS rows of 5 features around a centre per class, and a label column."""
    rng = np.random.default_rng(0)
    centres = {"a": 0.0, "b": 4.0, "c": -4.0}
    labels = np.resize(np.repeat(classes, TABLE_ROWS // len(classes)), TABLE_ROWS)
    lines = ["x0,x1,x2,x3,x4,label"]
    for label in labels:
        lines.append(",".join(f"{v:.5f}" for v in rng.normal(centres[label], 1.0, 5)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def stamps(rows: int) -> list[str]:
    start = np.datetime64("2020-01-01T00:00:00")
    return [str(t).replace("T", " ") for t in start + np.arange(rows) * np.timedelta64(5, "m")]


def write_series(path: Path, rows: int = SERIES_ROWS, spike: int | None = 220, seed: int = 0) -> Path:
    """A timestamped CSV (NAB's layout): noise around 10, one spike of 12 deviations at row ``spike``."""
    values = np.random.default_rng(seed).normal(10.0, 1.0, rows)
    if spike is not None:
        values[spike] += 12.0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t},{v:.4f}\n" for t, v in zip(stamps(rows), values)))
    return path


def write_nab(root: Path, series: int = 3) -> Path:
    """A NAB folder of ``series`` series, each with one planted spike inside its one labelled window."""
    table = {}
    for k in range(series):
        name = f"{'synthetic' if k < 2 else 'other'}/series_{k}.csv"
        spike = 200 + 20 * k
        write_series(root / "data" / name, spike=spike, seed=k)
        times = stamps(SERIES_ROWS)
        table[name] = [[f"{times[spike - 10]}.000000", f"{times[spike + 10]}.000000"]]
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(table, indent=1))
    return root


# --------------------------------------------------------------------------------------------- helpers


def run_ok(capsys, *argv) -> dict:
    """Run the CLI in this process; assert success; the one JSON line it printed."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1, captured.out
    return json.loads(lines[0])


def user_error(capsys, *argv) -> str:
    """Exit status 2 and exactly one stderr line, starting with 'error:'."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("table") / "table.csv")


@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory, table) -> Path:
    """A 2-step run on the table's items of class a only (read-only for the tests: copy before writing)."""
    run = tmp_path_factory.mktemp("one_class") / "run"
    assert main(["pretrain", "--data", str(table), "--out", str(run), "--only-class", "a", *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def series_run(tmp_path_factory) -> Path:
    """A 2-step run on windows of one long series (a run of the series modality)."""
    folder = tmp_path_factory.mktemp("series_run")
    data = write_series(folder / "train.csv")
    run = folder / "run"
    assert main(["pretrain", "--data", str(data), "--window", "16", "--stride", "4", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture
def run_copy(one_class_run, tmp_path) -> Path:
    return Path(shutil.copytree(one_class_run, tmp_path / "run"))


# --------------------------------------------------------------------------------------------- pretrain


def test_only_class_trains_on_that_class_and_records_it(one_class_run, table):
    from selfmeta.data import load_data

    train = load_data(table, "train")
    expected = int((train.y.numpy() == train.classes.index("a")).sum())
    record = json.loads((one_class_run / "config.json").read_text())
    assert record["data"]["items"] == expected < len(train)
    assert record["data"]["only_class"] == "a"


def test_resume_with_another_class_is_refused(capsys, run_copy, table):
    line = user_error(capsys, "pretrain", "--data", table, "--out", run_copy, "--only-class", "b", "--resume", *TINY)
    assert "only_class" in line and '"b"' in line and '"a"' in line


def test_only_class_errors(capsys, tmp_path, table):
    line = user_error(capsys, "pretrain", "--data", table, "--out", tmp_path / "r1", "--only-class", "z", *TINY)
    assert "'z'" in line and "a, b, c" in line
    series = write_series(tmp_path / "s.csv")
    line = user_error(capsys, "pretrain", "--data", series, "--window", "16", "--out", tmp_path / "r2",
                      "--only-class", "a", *TINY)
    assert "no labels" in line
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


# --------------------------------------------------------------------------------------------- evaluate


def test_evaluate_anomaly_scores_and_saves(capsys, run_copy, table):
    result = run_ok(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly", "--normal-class", "a",
                    "metric=euclidean")
    assert result["protocol"] == "anomaly" and result["normal_class"] == "a" and result["detector"] == "knn"
    assert 0.0 <= result["auroc"] <= 1.0 and 0.0 <= result["auprc"] <= 1.0
    assert result["normal"] == 10 and result["anomalies"] == 20 and result["train_items"] == 40
    assert result["auroc"] > 0.8          # classes 4 deviations apart: easy even for 2 steps of training
    assert json.loads((run_copy / "metrics.json").read_text()) == result
    assert json.loads((run_copy / "evaluations.jsonl").read_text().splitlines()[-1]) == result


def test_evaluate_anomaly_errors(capsys, tmp_path, run_copy, table):
    line = user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly", "--normal-class", "z")
    assert "--normal-class 'z'" in line and "a, b, c" in line
    only_a = write_table(tmp_path / "only_a.csv", classes=("a",))
    line = user_error(capsys, "evaluate", run_copy, "--data", only_a, "--protocol", "anomaly", "--normal-class", "a")
    assert "only items of class 'a'" in line
    line = user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly", "--normal-class", "a",
                      "contamination=2")
    assert "contamination" in line and "<= 0.5" in line
    line = user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly", "--normal-class", "a",
                      "--detector", "nope")
    assert "unknown detector 'nope'" in line and "knn" in line and "mahalanobis" in line
    line = user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly", "--normal-class", "a",
                      "depth=3")
    assert "unknown option 'depth' for detector 'knn'" in line and "contamination" in line
    user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "anomaly")     # no --normal-class
    user_error(capsys, "evaluate", run_copy, "--data", table, "--protocol", "linear", "k=3")
    assert not (run_copy / "metrics.json").exists()


# --------------------------------------------------------------------------------------------- detect


def test_detect_on_a_table(capsys, tmp_path, one_class_run, table):
    out = tmp_path / "scores.csv"
    summary = run_ok(capsys, "detect", one_class_run, "--data", table, "--out", out, "--plot", tmp_path / "h.png",
                     "contamination=0.2")
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["index", "score", "flagged", "label"]
    assert len(scores) == summary["items"] == TABLE_ROWS // 5      # the test split
    assert set(scores["flagged"]) <= {0, 1} and scores["flagged"].sum() == summary["flagged"]
    assert ((scores["score"] > summary["threshold"]) == scores["flagged"].astype(bool)).all()
    assert (tmp_path / "h.png").read_bytes().startswith(PNG)


def test_detect_on_a_series(capsys, tmp_path, series_run):
    data = write_series(tmp_path / "series.csv")
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps([[stamps(SERIES_ROWS)[210], stamps(SERIES_ROWS)[230]]]))
    out = tmp_path / "out" / "scores.csv"
    summary = run_ok(capsys, "detect", series_run, "--data", data, "--detector", "windowed_gaussian", "--out", out,
                     "--windows", windows)
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["timestamp", "value", "score", "flagged"]
    assert len(scores) == SERIES_ROWS and scores["timestamp"][0] == "2020-01-01 00:00:00"
    assert summary["threshold"] == 1.0 and summary["probation"] == 45 and summary["windows"] == 1
    flagged = np.flatnonzero(scores["flagged"])
    assert 220 in flagged and (flagged >= 45).all()                  # the spike; nothing in the probation
    assert (tmp_path / "out" / "scores.png").read_bytes().startswith(PNG)
    # --threshold overrides the detector's own; --plot names the picture
    summary = run_ok(capsys, "detect", series_run, "--data", data, "--detector", "windowed_gaussian", "--out", out,
                     "--threshold", "0.99", "--plot", tmp_path / "p.png", "window=100", "step=10")
    assert summary["threshold"] == 0.99 and summary["flagged"] >= 1 and summary["windows"] is None
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


def test_detect_finds_the_windows_of_a_nab_series(capsys, tmp_path, series_run):
    root = write_nab(tmp_path / "nab", series=1)
    summary = run_ok(capsys, "detect", series_run, "--data", root / "data" / "synthetic" / "series_0.csv",
                     "--detector", "windowed_gaussian", "--out", tmp_path / "s.csv")
    assert summary["windows"] == 1


def test_detect_on_a_series_with_the_default_detector(capsys, tmp_path, series_run):
    summary = run_ok(capsys, "detect", series_run, "--data", write_series(tmp_path / "s.csv"), "--out",
                     tmp_path / "s_scores.csv")
    assert summary["detector"] == "memory" and summary["rows"] == SERIES_ROWS


BAD_SERIES = {
    "unordered": ("timestamp,value\n2020-01-01 00:10:00,1\n2020-01-01 00:05:00,2\n2020-01-01 00:15:00,3\n",
                  "comes before"),
    "duplicate": ("timestamp,value\n2020-01-01 00:05:00,1\n2020-01-01 00:05:00,2\n2020-01-01 00:15:00,3\n",
                  "repeats"),
    "non-numeric": ("timestamp,value\n2020-01-01 00:05:00,1\n2020-01-01 00:10:00,high\n", "'high' is not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_SERIES))
def test_detect_refuses_a_bad_series(capsys, tmp_path, series_run, case):
    text, fragment = BAD_SERIES[case]
    (tmp_path / "bad.csv").write_text(text)
    line = user_error(capsys, "detect", series_run, "--data", tmp_path / "bad.csv", "--detector", "windowed_gaussian",
                      "--out", tmp_path / "scores.csv")
    assert fragment in line and "line 3" in line
    assert not (tmp_path / "scores.csv").exists()


def test_detect_errors(capsys, tmp_path, one_class_run, series_run, table):
    series = write_series(tmp_path / "s.csv")
    out = tmp_path / "scores.csv"
    line = user_error(capsys, "detect", one_class_run, "--data", series, "--detector", "windowed_gaussian", "--out", out)
    assert "trained on table data" in line and "series" in line
    line = user_error(capsys, "detect", series_run, "--data", table, "--out", out)
    assert "trained on series data, the data is table" in line
    line = user_error(capsys, "detect", one_class_run, "--data", "digits", "--out", out)
    assert "trained on table data, the data is image" in line
    two = tmp_path / "two.csv"  # two channels; the series run's encoder takes one
    two.write_text("timestamp,a,b\n" + "".join(f"{t},{i % 7},{i % 5}\n" for i, t in enumerate(stamps(300))))
    line = user_error(capsys, "detect", series_run, "--data", two, "--out", out)
    assert "trained on inputs of shape (1, 16), the data has (2, 300)" in line
    line = user_error(capsys, "nab", "--data", write_nab(tmp_path / "nab"), "--detector", "memory", "--encoder",
                      one_class_run, "--out", tmp_path / "results")
    assert "trained on table data, the data is series" in line
    line = user_error(capsys, "detect", one_class_run, "--data", table, "--detector", "nope", "--out", out)
    assert "unknown detector 'nope'; valid:" in line and "knn" in line
    line = user_error(capsys, "detect", series_run, "--data", series, "--detector", "nope", "--out", out)
    assert "unknown stream detector 'nope'; valid:" in line and "windowed_gaussian" in line
    line = user_error(capsys, "detect", one_class_run, "--data", table, "--out", out, "contamination=0.9")
    assert "contamination" in line
    line = user_error(capsys, "detect", series_run, "--data", series, "--detector", "windowed_gaussian", "--out", out,
                      "window=1")
    assert "window" in line and "> 1" in line
    user_error(capsys, "detect", one_class_run, "--data", table, "--out", tmp_path / "scores.txt")
    assert not out.exists()


# --------------------------------------------------------------------------------------------- nab


def test_nab_runs_a_corpus_through_the_entry_point(tmp_path):
    root = write_nab(tmp_path / "nab")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([EXE, "nab", "--data", str(root), "--detector", "windowed_gaussian", "--out", "results"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    summary = json.loads(lines[0])
    profiles = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
    assert summary["detector"] == "windowed_gaussian" and summary["points"] == 3 * SERIES_ROWS
    assert set(summary["thresholds"]) == set(summary["cross_threshold"]) == set(profiles)
    for profile in profiles:
        assert summary[profile] > 0.0                      # above the null detector, which scores 0
    assert summary["points_per_second"] > 0
    results = tmp_path / "results"
    scores = pd.read_csv(results / "synthetic" / "windowed_gaussian_series_0.csv")
    assert list(scores.columns) == ["timestamp", "value", "anomaly_score"] and len(scores) == SERIES_ROWS
    assert (results / "other" / "windowed_gaussian_series_2.csv").is_file()
    record = json.loads((results / "results.json").read_text())
    assert record["standard"] == summary["standard"] and len(record["series"]) == 3


def test_nab_errors(capsys, tmp_path, one_class_run):
    root = write_nab(tmp_path / "nab", series=2)
    (tmp_path / "no_labels" / "data").mkdir(parents=True)
    line = user_error(capsys, "nab", "--data", tmp_path / "no_labels", "--detector", "null", "--out", tmp_path / "r")
    assert "labels/combined_windows.json" in line
    (tmp_path / "file").write_text("")
    line = user_error(capsys, "nab", "--data", root, "--detector", "null", "--out", tmp_path / "file")
    assert "is a file" in line
    line = user_error(capsys, "nab", "--data", root, "--detector", "nope", "--out", tmp_path / "r")
    assert "unknown stream detector 'nope'" in line
    line = user_error(capsys, "nab", "--data", root, "--detector", "null", "--encoder", one_class_run, "--out",
                      tmp_path / "r")
    assert "--encoder does not apply" in line
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------- list


def test_list_shows_the_detectors(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    items = out.split("anomaly detectors on items")[1].split("stream detectors")[0]
    for name in ("knn", "mahalanobis", "iforest", "lof", "reconstruction"):
        assert f"  {name} " in items
    assert "k=5  (an integer > 0)" in items and "contamination" in items
    stream = out.split("stream detectors on one long series")[1]
    for name in stream_detectors():
        assert f"  {name} " in stream
    assert "window=6400  (an integer > 1)" in stream and "flags from 1" in stream
    assert "fewshot, episode-cluster, anomaly" in out


def test_memory_detector_checks_its_encoder_against_the_series(series_run):
    detector = stream_detectors().get("memory")(encoder=str(series_run))
    assert detector.rows() == 16                                            # the encoder's input length
    assert detector.score(np.random.default_rng(0).normal(size=(200, 1)), 30).shape == (200,)
    with pytest.raises(SelfmetaError, match=r"trained on inputs of shape \(1, 16\), the data has \(2, 16\)"):
        detector.score(np.zeros((200, 2)), 30)
