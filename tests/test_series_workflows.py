"""Series through every door: the API, the command line, meta-learning and the task constructors, and a
short TS2Vec run on GunPoint against 1-NN Euclidean (shared data)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared
from selfmeta import FewShotLearner, SelfSupervised
from selfmeta.cli import main
from selfmeta.data import load_data
from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.data.tasks import TASKS, build_tasks
from selfmeta.engine import TrainConfig, train
from selfmeta.errors import SelfmetaError

EXE = shutil.which("selfmeta") or str(Path(sys.executable).with_name("selfmeta"))


def waves(n_per_class: int = 12, classes: int = 4, length: int = 48, channels: int = 2, seed: int = 0):
    """Noisy sines whose frequency is the class: (N, C, T) float32 and labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    t = np.linspace(0, 1, length)
    phase = rng.uniform(0, 2 * np.pi, (len(y), channels, 1))
    x = np.sin(2 * np.pi * (y[:, None, None] + 1) * t + phase) + 0.1 * rng.normal(size=(len(y), channels, length))
    return x.astype(np.float32), y


def write_problem(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, seed in (("TRAIN", 0), ("TEST", 1)):
        x, y = waves(seed=seed)
        x[::5, :, 40:] = np.nan                                       # some shorter series
        rows = [":".join(",".join("?" if np.isnan(v) else f"{v:.4f}" for v in c) for c in item) + f":{label}"
                for item, label in zip(x, y)]
        header = "@problemName Waves\n@univariate false\n@dimensions 2\n@classLabel true 0 1 2 3\n@data\n"
        (folder / f"Waves_{split}.ts").write_text(header + "\n".join(rows) + "\n")
    return folder


def test_the_api_takes_series_arrays_with_missing_values(tmp_path):
    x, _ = waves()
    x[0, :, 30:] = np.nan
    est = SelfSupervised(method="ts2vec", encoder="ts2vec", modality="series", epochs=1,
                         encoder_options={"depth": 2}).fit(x)
    features = est.transform(x)
    assert features.shape == (len(x), 320) and np.isfinite(features).all() and features.dtype == np.float32
    univariate = SelfSupervised(method="simclr", encoder="resnet1d", modality="series", epochs=1).fit(x[:, 0])
    assert univariate.transform(x[:, 0]).shape == (len(x), 128)                   # (N, T) is one channel
    est.save(tmp_path / "series.safetensors")
    np.testing.assert_allclose(SelfSupervised.load(tmp_path / "series.safetensors").transform(x), features, atol=1e-6)
    with pytest.raises(SelfmetaError, match="Input X contains NaN"):
        SelfSupervised(encoder="mlp", epochs=1).fit(x[:, 0])                      # a table refuses NaN


def test_few_shot_learner_on_series():
    x, y = waves(n_per_class=10, classes=6)
    seen = (y > 0) & (y < 5)                                       # meta-train on 2-5 Hz, adapt to 1 Hz and 6 Hz
    learner = FewShotLearner(method="protonet", encoder="resnet1d", modality="series", ways=3, shots=2, queries=3,
                             tasks_per_step=4, steps=30, encoder_options={"width": 16}).fit(x[seen], y[seen])
    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in (0, 5)])
    query = np.concatenate([np.flatnonzero(y == c)[2:] for c in (0, 5)])
    predicted = learner.adapt(x[support], y[support]).predict(x[query])
    assert set(predicted) <= {0, 5} and (predicted == y[query]).mean() > 0.8


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_constructor_builds_episodes_of_series(name):
    x, y = waves()
    data = Dataset(torch.from_numpy(x), torch.from_numpy(y), [str(c) for c in range(4)], "series", "waves")
    spec = EpisodeSpec(3, 1, 1) if name == "metacontrastive" else EpisodeSpec(3, 2, 2)
    options = {"clusters": 6, "partitions": 2} if name == "cactus" else {}
    tasks = build_tasks(name, data, spec, 2, 1, 0, options)
    index = tasks.indices(0, 0)
    assert index.shape == (2 * spec.size,) and index.max() < len(data)


@pytest.mark.parametrize("method, tasks", [("protonet", "labels"), ("maml", "labels"), ("protonet", "umtra")])
def test_meta_learners_train_on_series(method, tasks):
    x, y = waves()
    data = Dataset(torch.from_numpy(x), torch.from_numpy(y), [str(c) for c in range(4)], "series", "waves")
    shots, queries = (1, 1) if tasks == "umtra" else (2, 2)
    result = train(TrainConfig(method=method, encoder="resnet1d", tasks=tasks, ways=3, shots=shots, queries=queries,
                               tasks_per_step=2, steps=3, log_every=1, encoder_options={"width": 8}), data, progress=False)
    assert result.steps == 3 and all(np.isfinite(r["loss"]) for r in result.history)


def test_the_command_line_on_a_problem_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_problem(tmp_path / "Waves")
    assert main(["pretrain", "--data", "Waves", "--method", "ts2vec", "--out", "run", "--steps", "20",
                 "encoder.depth=3", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 20
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["modality"] == "series" and config["config"]["encoder"] == "ts2vec"   # the modality's default
    assert config["config"]["batch_size"] == 8 and config["config"]["lr"] == 1e-3       # TS2Vec's own defaults
    for protocol in ("svm", "linear", "knn"):
        assert main(["evaluate", "run", "--data", "Waves", "--protocol", protocol]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["protocol"] == protocol and result["accuracy"] > 0.5, result
    assert main(["evaluate", "run", "--data", "Waves", "--protocol", "fewshot", "--ways", "3", "--shots", "1",
                 "--queries", "3", "--episodes", "50"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] > 0.4
    assert main(["embed", "run", "--data", str(folder), "--split", "all", "--out", "f.npy"]) == 0
    assert np.load(tmp_path / "f.npy").shape == (96, 320)


@pytest.mark.parametrize("extra, message", [
    (["--method", "rotation"], "method 'rotation' does not take series data; use one of: barlow,"),
    (["--encoder", "conv4"], "encoder 'conv4' does not take series data; use one of: resnet1d, ts2vec"),
    (["--method", "ts2vec", "--encoder", "resnet1d"], "ts2vec needs an encoder with a representation per time step"),
])
def test_what_does_not_take_series_says_what_does(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    write_problem(tmp_path / "Waves")
    assert main(["pretrain", "--data", "Waves", "--out", "run", "--steps", "2", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_short_ts2vec_run_on_gunpoint_beats_1nn_euclidean(tmp_path):
    gunpoint = shared("ucr/GunPoint")
    train_set, test_set = load_data(gunpoint, "train"), load_data(gunpoint, "test")
    nearest = torch.cdist(test_set.x.flatten(1), train_set.x.flatten(1)).argmin(1)
    euclidean = float((train_set.y[nearest] == test_set.y).float().mean())          # 0.913
    proc = subprocess.run([EXE, "pretrain", "--data", gunpoint, "--method", "ts2vec", "--out", "run", "--steps", "40",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([EXE, "evaluate", "run", "--data", gunpoint, "--protocol", "svm"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    accuracy = json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"]
    assert accuracy > euclidean, (accuracy, euclidean)
