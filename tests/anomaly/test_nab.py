"""NAB's scorer against hand-computed cases and a literal transcription of NAB's sweeper; the windowed
Gaussian against NAB's own loop and its published scoreboard; every online detector never reads the future."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nab_reference import best as reference_best
from nab_reference import sweep_rows
from selfmeta.anomaly import STREAM_DETECTORS
from selfmeta.anomaly.learned import left_nearest, record_score
from selfmeta.anomaly.nab import (
    PROFILES, Profile, Series, as_stored, cross_threshold, probation_length, read_corpus, row_weights, score_corpus,
    sweep,
)
from selfmeta.anomaly.stream import windowed_stats
from selfmeta.errors import SelfmetaError

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
STANDARD = PROFILES["standard"]


def stamps(n: int) -> np.ndarray:
    return np.datetime64("2020-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(5, "m")


def one_series(n: int = 100, window: tuple[int, int] = (40, 59)) -> tuple[np.ndarray, list]:
    t = stamps(n)
    return t, [(t[window[0]], t[window[1]])]


def raw_score(scores: np.ndarray, t: np.ndarray, windows: list, profile: Profile = STANDARD) -> float:
    return sweep([scores], [row_weights(t, windows, profile)], profile).best()[1]


def spike(n: int, rows: list[int]) -> np.ndarray:
    s = np.zeros(n)
    s[rows] = 1.0
    return s


def S(x: float) -> float:  # NAB's scaled sigmoid, by hand
    return -1.0 if x >= 3 else 2 / (1 + math.exp(5 * x)) - 1


def test_probation_is_15_percent_at_most_750_rows():
    assert probation_length(100) == 15
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750


def test_an_early_hit_earns_tp_and_a_late_hit_less():
    t, windows = one_series()
    assert raw_score(spike(100, [40]), t, windows) == pytest.approx(1.0)            # the window's first row
    late = S(-1 / 20) / S(-1.0)                                                    # its last row: 0.126
    assert raw_score(spike(100, [59]), t, windows) == pytest.approx(late)
    # Only the earliest detection in a window counts: a later one in it adds nothing.
    assert raw_score(spike(100, [45, 50]), t, windows) == pytest.approx(S(-15 / 20) / S(-1.0))


def test_a_missed_window_costs_fn_and_false_positives_cost_by_distance():
    t, windows = one_series()
    assert raw_score(np.zeros(100), t, windows) == pytest.approx(-1.0)
    low_fn = PROFILES["reward_low_FN_rate"]
    assert sweep([np.zeros(100)], [row_weights(t, windows, low_fn)], low_fn).scores[0] == pytest.approx(-2.0)
    # Detections everywhere but the window: the sweep's row for threshold 1.0 holds them all.
    hits = spike(100, [20, 61, 70, 99])
    table = sweep([hits], [row_weights(t, windows, STANDARD)], STANDARD)
    # before any window: -fp; after it, fp * S(distance / (width - 1)), close to 0 right after the window
    expected = -1.0 - 0.11 + 0.11 * (S(2 / 19) + S(11 / 19) + S(40 / 19))
    assert table.at(1.0) == pytest.approx(expected)
    assert S(2 / 19) > -0.6 and S(40 / 19) < -0.99                                 # a late FP costs almost fp
    assert table.best() == (np.inf, pytest.approx(-1.0))                           # detecting nothing is better


def test_probationary_rows_are_not_scored():
    t, windows = one_series()
    assert raw_score(spike(100, [3, 10]), t, windows) == pytest.approx(-1.0)        # FPs in probation: free


def test_sweep_matches_nab_row_by_row_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    for profile_name, profile in PROFILES.items():
        all_rows, scores, w = [], [], []
        for k, (n, spans) in enumerate([(300, [(10, 30), (120, 150)]), (250, [(200, 230)]), (180, [])]):
            t = stamps(n)
            windows = [(t[a], t[b]) for a, b in spans]
            s = np.round(rng.random(n), 2)                                       # many ties
            scores.append(s)
            w.append(row_weights(t, windows, profile))
            all_rows += sweep_rows(list(t), list(s), windows, f"s{k}", profile)
        threshold, raw = sweep(scores, w, profile).best()
        ref_threshold, ref_raw = reference_best(all_rows, profile)
        assert raw == pytest.approx(ref_raw, abs=1e-9), profile_name
        assert threshold == (np.inf if ref_threshold == 1.1 else pytest.approx(ref_threshold))


def test_stored_scores_have_12_significant_digits_as_nab_wrote_them():
    assert as_stored(np.array([1 - 1e-13, 0.123456789012345, 0.5]))[0] == 1.0
    assert as_stored(np.array([0.123456789012345]))[0] == 0.123456789012


def nab_windowed_gaussian(values: np.ndarray, window: int, step: int) -> np.ndarray:
    """NAB's ``WindowedGaussianDetector.handleRecord``, row by row (v1.1)."""
    data, buffer, mean, std, out = [], [], 0.0, 1.0, []
    for x in values:
        out.append(1 - 0.5 * math.erfc(abs(x - mean) / std / math.sqrt(2)) if data else 0.0)
        if len(data) < window:
            data.append(x)
            mean, std = np.mean(data), np.std(data) or 1e-6
        else:
            buffer.append(x)
            if len(buffer) == step:
                data = data[step:] + buffer
                buffer = []
                mean, std = np.mean(data), np.std(data) or 1e-6
    return np.array(out)


def test_windowed_gaussian_matches_nab_loop():
    rng = np.random.default_rng(1)
    x = np.r_[np.full(5, 3.0), rng.normal(10, 2, 400)]                           # a flat start: std 0 -> 1e-6
    detector = STREAM_DETECTORS.get("windowed_gaussian")(window=50, step=7)
    np.testing.assert_allclose(detector.score(x[:, None], 60), nab_windowed_gaussian(x, 50, 7), atol=1e-9)
    mean, std = windowed_stats(x, 50, 7)
    assert std[3] == 1e-6 and mean[3] == 3.0


def left_nearest_loop(f: np.ndarray, gap: int) -> np.ndarray:
    out = np.full(len(f), np.inf)
    for t in range(len(f)):
        for j in range(0, t - gap + 1):
            out[t] = min(out[t], float(np.linalg.norm(f[t] - f[j])))
    return out


def test_left_nearest_and_record_score_against_loops():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(60, 3)).astype(np.float32)
    got = left_nearest(torch.from_numpy(f), gap=5, block=64).numpy()                 # small blocks: several
    np.testing.assert_allclose(got, left_nearest_loop(f, 5), rtol=1e-4)
    d = rng.random(50)
    s = record_score(d, smooth=1, warmup=0, history=4, suppress=0)
    for t in range(1, 50):
        r = d[t] / max(d[max(0, t - 4):t].max(), 1e-12)
        assert s[t] == pytest.approx(r / (1 + r))


def online_detectors():
    yield "null", {}
    yield "windowed_gaussian", {"window": 60, "step": 10}
    yield "memory", {"window": 8, "history": 50}
    yield "memory", {"window": 8, "adapt": "none"}


@pytest.mark.parametrize("name,options", list(online_detectors()))
def test_online_scores_never_read_the_future(name, options):
    rng = np.random.default_rng(3)
    x = np.sin(np.arange(400) / 5)[:, None] + rng.normal(0, 0.1, (400, 1))
    detector = STREAM_DETECTORS.get(name)(**options)
    before = detector.score(x, 60)
    changed = x.copy()
    changed[250:] = rng.normal(5, 3, (150, 1))                                      # rewrite the future
    after = detector.score(changed, 60)
    np.testing.assert_array_equal(before[:250], after[:250])
    assert np.isfinite(before).all() and before.shape == (400,)
    if name != "null":
        assert not np.array_equal(before[250:], after[250:])


def test_every_registered_stream_detector_is_covered():
    assert {n for n, _ in online_detectors()} == set(STREAM_DETECTORS.names())


def test_memory_flags_a_planted_anomaly_first():
    rng = np.random.default_rng(4)
    x = np.sin(np.arange(1200) / 8) + rng.normal(0, 0.05, 1200)
    x[900:910] += 3.0
    scores = STREAM_DETECTORS.get("memory")().score(x[:, None], 180)
    assert 900 <= int(np.argmax(scores)) < 910


def write_nab(root: Path, series: dict[str, np.ndarray], windows: dict[str, list]) -> None:
    for name, values in series.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = stamps(len(values))
        path.write_text("timestamp,value\n" + "".join(f"{str(a).replace('T', ' ')[:19]},{v}\n" for a, v in zip(t, values)))
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_read_corpus_and_scores_on_a_small_folder(tmp_path):
    rng = np.random.default_rng(5)
    series, windows = {}, {}
    for k in range(4):
        x = rng.normal(0, 1, 600)
        x[400 + 10 * k] = 12.0
        name = f"group{k % 2}/s{k}.csv"
        series[name] = x
        t = stamps(600)
        windows[name] = [[str(t[380 + 10 * k]).replace("T", " "), str(t[430 + 10 * k]).replace("T", " ")]]
    write_nab(tmp_path, series, windows)
    corpus = read_corpus(tmp_path)
    assert [s.name for s in corpus] == sorted(series) and all(len(s.windows) == 1 for s in corpus)
    detector = STREAM_DETECTORS.get("windowed_gaussian")()
    scores = [detector.score(s.values[:, None], s.probation) for s in corpus]
    result = score_corpus(corpus, scores)
    assert result["standard"]["score"] > 90 and result["standard"]["null"] == pytest.approx(-4.0)
    assert score_corpus(corpus, [np.full(600, 0.5)] * 4)["standard"]["score"] == pytest.approx(0.0)
    assert cross_threshold(corpus, scores)["standard"] > 90


def test_bad_nab_folders(tmp_path):
    with pytest.raises(SelfmetaError, match="combined_windows.json"):
        read_corpus(tmp_path)
    write_nab(tmp_path, {"g/a.csv": np.zeros(50)}, {"g/a.csv": [], "g/missing.csv": []})
    with pytest.raises(SelfmetaError, match="does not exist"):
        read_corpus(tmp_path)
    with pytest.raises(SelfmetaError, match="one anomaly score per row"):
        score_corpus([Series("g/a.csv", stamps(50), np.zeros(50), [])], [np.zeros(49)])


@pytest.mark.shared_data
@pytest.mark.skipif(not (NAB / "labels" / "combined_windows.json").is_file(), reason=f"{NAB} is absent")
def test_windowed_gaussian_reproduces_nab_scoreboard():
    corpus = read_corpus(NAB)
    assert len(corpus) == 58 and sum(len(s.windows) for s in corpus) == 116
    detector = STREAM_DETECTORS.get("windowed_gaussian")()
    result = score_corpus(corpus, [detector.score(s.values[:, None], s.probation) for s in corpus])
    published = {"standard": 39.6, "reward_low_FP_rate": 20.9, "reward_low_FN_rate": 47.4}
    for profile, value in published.items():
        assert abs(result[profile]["score"] - value) <= 0.5, (profile, result[profile])
    assert result["standard"]["raw"] == pytest.approx(-24.0131054891, abs=1e-6)   # NAB's own total
    null = score_corpus(corpus, [np.full(len(s.values), 0.5) for s in corpus])
    assert all(v["score"] == 0.0 for v in null.values())
