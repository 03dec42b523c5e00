"""selfmeta tune: the search space, reproducible trials, the budget, probe scores, bad input; the data's
view rule."""

from __future__ import annotations

import json
import time

import pytest
import torch

from selfmeta.data import load_data
from selfmeta.engine import TrainConfig
from selfmeta.engine.model import adapt_views
from selfmeta.engine.tune import search_space, trial_config, tune
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.image import SYMBOL_INK, ImageViews, ink_fraction

SMALL = {"width": 8}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "train")


def small(**changes) -> TrainConfig:
    return TrainConfig(**{"method": "simclr", "encoder": "conv4", "epochs": None, "time_budget": 30,
                          "encoder_options": SMALL, **changes})


def test_search_space_is_declared_by_the_parts_and_leaves_fixed_options_alone(digits):
    space = search_space(small(), digits, set(), "simclr")
    assert {"views.crop_scale", "views.rotation", "views.elastic", "method.temperature", "lr_scale",
            "batch_size"} <= set(space)
    assert "views.saturation" not in space                       # one channel: no colour options
    assert space["batch_size"].choices == (64, 128, 256)
    fixed = search_space(small(), digits, {"views.rotation", "lr", "method.temperature"}, "simclr")
    assert not {"views.rotation", "lr_scale", "method.temperature"} & set(fixed)
    assert "method.temperature" not in search_space(small(method="byol"), digits, set(), "byol")
    colour = ImageViews.search_space((3, 32, 32))
    assert {"saturation", "hue", "grayscale"} <= set(colour)
    assert "elastic" not in ImageViews.search_space((3, 96, 96))  # strokes: small images only
    assert set(search_space(small(), digits.subset(torch.arange(100)), set(), "simclr")["batch_size"].choices) == {64}
    label_free = search_space(small(), digits, set(), "simclr", views=False)  # what a label-free score searches
    assert set(label_free) == {"method.temperature", "lr_scale", "batch_size"}
    own = {"views.rotation": search_space(small(), digits, set(), "simclr")["views.rotation"]}
    assert "views.rotation" in search_space(small(), digits, set(), "simclr", own, views=False)  # asked for: kept


def test_trial_options_become_a_config(digits):
    cfg = trial_config(small(), {"views.crop_scale": (0.3, 1.0), "method.temperature": 0.2, "lr_scale": 2.0,
                                 "batch_size": 128}, len(digits))
    assert tuple(cfg.view_options["crop_scale"]) == (0.3, 1.0) and cfg.method_options["temperature"] == 0.2
    assert cfg.batch_size == 128 and cfg.lr == pytest.approx(2.0 * 2e-3 * 128 / 256)
    assert cfg.encoder_options == SMALL                        # the rest is the base's


def test_trials_are_reproducible_with_a_seed(digits):
    def search():
        tuned = tune(small(), digits, 3, None, trials=4, pilot_items=1024)
        return [(t.options, t.state, t.scores) for t in tuned.trials], tuned.best.number

    first, second = search(), search()
    assert first == second
    trials, best = first
    assert len(trials) == 4 and trials[0][0] == {}              # the first pilot is the defaults
    assert all(t[1] in ("complete", "pruned") for t in trials) and trials[best][1] == "complete"
    assert all(0 <= s <= 1 for t in trials for s in t[2])       # view retrieval under the reference views


def test_the_winner_continues_from_its_pilots_weights(digits, monkeypatch):
    import selfmeta.engine.tune as tune_module

    calls = []
    real = tune_module.train

    def spy(cfg, data, run_dir=None, **kwargs):
        result = real(cfg, data, run_dir, **kwargs)
        calls.append((kwargs.get("start_from"), {k: v.clone() for k, v in result.method.state_dict().items()}))
        return result

    monkeypatch.setattr(tune_module, "train", spy)
    tuned = tune(small(), digits, 3, None, trials=3, pilot_items=512)
    start_from, _ = calls[-1]
    assert all(c[0] is None for c in calls[:-1])                # pilots start from the seed's initialization
    pilot = calls[tuned.best.number][1]
    assert start_from.keys() == pilot.keys() and all(torch.equal(start_from[k], pilot[k]) for k in pilot)


def test_training_can_start_from_given_weights(digits):
    from selfmeta.engine import train

    first = train(small(steps=3, time_budget=None), digits, None, progress=False)
    state = {k: v.clone() for k, v in first.method.state_dict().items()}
    still = train(small(steps=2, time_budget=None, lr=1e-12, weight_decay=0.0), digits, None, progress=False,
                  start_from=state)
    assert all(torch.allclose(still.method.state_dict()[k].float(), state[k].float(), atol=1e-6)
               for k in state if state[k].is_floating_point() and "running" not in k)
    fresh = train(small(steps=2, time_budget=None, lr=1e-12, weight_decay=0.0), digits, None, progress=False)
    key = "backbone.encoder.body.0.0.weight"
    assert not torch.allclose(fresh.method.state_dict()[key], state[key])  # without it: the seed's start


def test_alignment_score_refuses_a_collapsed_encoder(digits):
    from selfmeta.engine.model import build_method
    from selfmeta.engine.tune import _Scorer

    method = build_method(small().resolved(len(digits)), digits)
    scorer = _Scorer(digits, torch.device("cpu"), 0, None, None, "alignment", method.views)
    working = scorer(method)
    assert -4 < working < 0
    with torch.no_grad():                                       # every item maps to one point: views agree
        for p in method.backbone.encoder.parameters():
            p.zero_()
        list(method.backbone.encoder.parameters())[-1].fill_(1.0)
    assert scorer(method) == -4.0
    retrieval = _Scorer(digits, torch.device("cpu"), 0, None, None, "retrieval", method.views)
    assert retrieval(method) <= 1 / 1024                         # collapsed: no item is told from another
    lidar = _Scorer(digits, torch.device("cpu"), 0, None, None, "lidar", method.views)
    rankme = _Scorer(digits, torch.device("cpu"), 0, None, None, "rankme", method.views)
    fresh = build_method(small().resolved(len(digits)), digits)
    assert lidar(fresh) > 1 and rankme(fresh) > 1
    same = _Scorer(digits, torch.device("cpu"), 0, None, None, "retrieval", torch.nn.Identity())
    assert same(fresh) == 1.0                                    # views that are the item itself: all found


def test_probe_score_with_a_few_labels(digits):
    val = load_data("digits", "test")
    tuned = tune(small(), digits, 3, None, trials=2, pilot_items=512, val=val, labels_per_class=5)
    assert tuned.score == "probe" and all(0.1 < s <= 1 for t in tuned.trials for s in t.scores)
    assert any(k.startswith("views.") for k in tuned.trials[1].options)   # labels can judge the views
    label_free = tune(small(), digits, 3, None, trials=2, pilot_items=512)
    assert not any(k.startswith("views.") for k in label_free.trials[1].options)
    with pytest.raises(SelfmetaError, match="needs both"):
        tune(small(), digits, 30, None, trials=2, val=val)


def test_tune_command_keeps_its_budget_and_writes_a_run(cli, tmp_path):
    start = time.perf_counter()
    proc = cli("tune", "--data", "digits", "--method", "simclr", "--out", "run", "--time-budget", "12",
               "encoder.width=8", check=True)
    took = time.perf_counter() - start
    assert took < 12 + 15, took                                  # the budget, the process start and the last save
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    trials = record["tune"]["trials"]
    assert summary["trials"] == len(trials) >= 2 and record["tune"]["winner"] == summary["winner"]
    assert trials[0]["options"] == {} and record["tune"]["score"] == "retrieval"
    assert all("encoder.width" not in t["options"] for t in trials)  # given on the command line: kept
    assert record["config"]["encoder_options"] == SMALL and record["config"]["time_budget"] < 12
    assert "trial 0: complete" in proc.stderr                    # a line per pilot
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
    evaluated = cli("evaluate", "run", "--data", "digits", "--protocol", "linear", check=True)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"] > 0.5


@pytest.mark.parametrize("args, fragment", [
    (["--time-budget", "10", "views.nope=1"], "nope"),
    (["--time-budget", "10", "--search-share", "1.5"], "--search-share"),
    (["--time-budget", "0"], "--time-budget"),
    (["--time-budget", "10", "--labels-per-class", "5"], "--val-split"),
    (["--time-budget", "10", "--val-split", "train", "--labels-per-class", "5"], "the pilots train on"),
    (["--time-budget", "10", "--method", "byol", "lr=1e-3", "views.crop_scale=[0.5,1]", "views.hflip=0",
      "views.rotation=0", "views.jitter=0", "views.brightness=0", "views.contrast=0", "views.blur=0",
      "views.elastic=0", "batch_size=64"], "nothing to tune"),
    (["--time-budget", "10", "--shots", "5"], "--tasks"),
    (["--time-budget", "10", "--search", "views.nope=0:1"], "NAME one of"),
    (["--time-budget", "10", "--search", "views.rotation=30:10"], "LOW < HIGH"),
    (["--time-budget", "10", "--search", "views.rotation=0:500"], "<= 180"),
    (["--time-budget", "10", "--search", "views.hflip=0,2"], "<= 1"),
    (["--time-budget", "10", "--search", "lr_scale=0:2:log"], "> 0"),
    (["--time-budget", "10", "--search", "views.rotation=0:30", "views.rotation=15"], "both set and searched"),
])
def test_tune_bad_input_is_one_line(cli, args, fragment):
    proc = cli("tune", "--data", "digits", "--out", "run", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr


def test_own_ranges_replace_and_add_to_the_space(digits):
    from selfmeta.engine.tune import parse_search

    cfg = small()
    own = parse_search(["views.rotation=5:10", "method.temperature=0.1:0.5:log", "views.crop_scale=0.3,0.6",
                        "views.grayscale=0:0.5", "batch_size=32,64"], cfg, digits)
    assert own["views.crop_scale"].choices == (0.3, 0.6) and own["views.crop_scale"].value(0.3) == (0.3, 1.0)
    assert own["method.temperature"].log and own["batch_size"].choices == (32, 64)
    space = search_space(cfg, digits, set(), "simclr", own)
    assert (space["views.rotation"].low, space["views.rotation"].high) == (5, 10) and "views.grayscale" in space
    assert "method.temperature" not in search_space(small(method="byol"), digits, set(), "byol", own)
    tuned = tune(cfg, digits, 3, None, trials=3, pilot_items=512, space=own)
    for trial in tuned.trials[1:]:
        assert 5 <= trial.options["views.rotation"] <= 10 and trial.options["batch_size"] in (32, 64)
        assert 0.1 <= trial.options["method.temperature"] <= 0.5


def test_tune_refuses_an_existing_run_before_searching(cli, tmp_path):
    cli("pretrain", "--data", "digits", "--out", "run", "--steps", "2", "encoder.width=8", check=True)
    start = time.perf_counter()
    proc = cli("tune", "--data", "digits", "--out", "run", "--time-budget", "60")
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert time.perf_counter() - start < 30                      # refused at once, not after the search


def test_api_tune_needs_a_budget():
    from sklearn.datasets import load_digits

    from selfmeta import SelfSupervised

    X = load_digits().data[:200]
    with pytest.raises(SelfmetaError, match="time_budget"):
        SelfSupervised(input_shape=(1, 8, 8), tune=True).fit(X)
    model = SelfSupervised(input_shape=(1, 8, 8), time_budget=8, tune=True, encoder_options=SMALL,
                           view_options={"rotation": 0}).fit(X)
    assert model.tune_["trials"][0]["options"] == {} and model.transform(X[:3]).shape == (3, 8)
    assert all("views.rotation" not in t["options"] for t in model.tune_["trials"])


def strokes(n: int, filled: bool) -> torch.Tensor:
    """(n, 1, 28, 28) uint8: a thin cross on black, or a filled block covering most of the frame."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    if filled:
        x[:, :, 3:25, 3:25] = 200
    else:
        x[:, :, 13:15, 4:24] = 255
        x[:, :, 4:24, 13:15] = 255
    return x


def test_ink_fraction_and_the_symbol_rule():
    thin, block = ink_fraction(strokes(4, False)), ink_fraction(strokes(4, True))
    assert torch.allclose(thin, torch.full((4,), (2 * 20 * 2 - 4) / 784))
    assert torch.allclose(block, torch.full((4,), 22 * 22 / 784))
    assert thin.mean() < SYMBOL_INK < block.mean()
    inverted = 255 - strokes(4, False)                            # dark strokes on white (Omniglot)
    assert torch.allclose(ink_fraction(inverted), thin)
    options, rule = ImageViews.data_defaults(strokes(8, False))
    assert options["hflip"] == 0 and options["jitter"] == 0 and "symbols" in rule
    assert ImageViews.data_defaults(strokes(8, True)) == ({}, "")
    big, rule = ImageViews.data_defaults(torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8))
    assert big == {"crop_scale": (0.08, 1.0)} and "96" in rule


def test_the_rule_fills_only_what_the_user_left(tmp_path):
    from selfmeta.data.dataset import Dataset

    data = Dataset(strokes(40, False), torch.arange(40) % 2, ["a", "b"], "image", "crosses")
    cfg, rule = adapt_views(small(view_options={"hflip": 0.5}), data)
    assert cfg.view_options["hflip"] == 0.5 and cfg.view_options["rotation"] == 15.0
    assert "hflip" not in rule["options"] and rule["options"]["jitter"] == 0.0
    from selfmeta.engine import train

    train(small(steps=2, time_budget=None, batch_size=8), data, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["views_for_this_data"]["options"]["hflip"] == 0.0
    assert record["config"]["view_options"]["crop_scale"] == [0.5, 1.0]
