"""A literal, slow transcription of numenta/NAB v1.1's ``Sweeper`` (``nab/sweeper.py``): row by row, as NAB
loops. The tests check the vectorized scorer in ``selfmeta.anomaly.nab`` against it."""

from __future__ import annotations

import math


def scaled_sigmoid(x: float) -> float:
    return -1.0 if x >= 3.0 else 2 * (1 / (1 + math.exp(5 * x))) - 1.0


def sweep_rows(timestamps, scores, windows, name, profile):
    """``calcSweepScore``: (score, weight, window name or None or 'probationary') per row."""
    timestamps = list(timestamps)
    windows = list(windows)
    rows = []
    max_tp = scaled_sigmoid(-1.0)
    probation = min(math.floor(0.15 * len(timestamps)), 0.15 * 5000)
    cur = cur_name = cur_width = cur_right = None
    prev_width = prev_right = None
    for i, (t, s) in enumerate(zip(timestamps, scores)):
        if windows and t == windows[0][0]:
            cur = windows.pop(0)
            cur_name = f"{name}|{cur[0]}"
            cur_right = timestamps.index(cur[1])
            cur_width = float(cur_right - timestamps.index(cur[0]) + 1)
        if cur is not None:
            weight = scaled_sigmoid(-(cur_right - i + 1) / cur_width) * profile.tp / max_tp
        else:
            past = 3.0 if prev_right is None else abs(prev_right - i) / float(prev_width - 1)
            weight = scaled_sigmoid(past) * profile.fp
        rows.append((s, weight, cur_name if i >= probation else "probationary"))
        if cur is not None and t == cur[1]:
            prev_right, prev_width = i, cur_width
            cur = cur_name = cur_width = cur_right = None
    return rows


def score_by_threshold(rows, profile):
    """``calcScoreByThreshold``: [(threshold, score, tp, fp)], thresholds from 1.1 down."""
    rows = sorted([r for r in rows if r[2] != "probationary"], key=lambda r: r[0], reverse=True)
    parts = {"fp": 0.0}
    for r in rows:
        if r[2] is not None:
            parts[r[2]] = -profile.fn
    out = []
    threshold = 1.1
    tp = fp = 0
    for s, weight, window in rows:
        if s != threshold:
            out.append((threshold, sum(parts.values()), tp, fp))
            threshold = s
        if window is not None:
            tp += 1
            parts[window] = max(parts[window], weight)
        else:
            fp += 1
            parts["fp"] += weight
    out.append((threshold, sum(parts.values()), tp, fp))
    return out


def best(rows, profile):
    """The optimizer's pick: the highest score, the first of ties (stable sort)."""
    table = sorted(score_by_threshold(rows, profile), key=lambda r: r[1], reverse=True)
    return table[0][0], table[0][1]
