"""``selfmeta quickstart``: the whole path on scikit-learn's bundled digits, no network and no files.

Pretrains SimCLR on the digits train split without labels, then compares its frozen features with raw
pixels: linear probe and weighted kNN with 5 labels per class and with all labels, and k-means NMI. Writes
the run directory (weights, config, metrics) plus ``results.json``, ``loss_curve.png`` and
``embedding_tsne.png`` (the test split's features in 2-D, coloured by label).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from selfmeta.data import load_data
from selfmeta.files import atomic_write
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import embed
from selfmeta.engine.trainer import train
from selfmeta.encoders import to_unit
from selfmeta.evaluation import run_protocol

# Standard SimCLR settings for small images, not tuned on the test split (20% held out by the fixed split).
QUICKSTART = TrainConfig(
    # fp32 everywhere (not precision=auto), so that the printed table is the same on every CPU.
    method="simclr", encoder="conv4", epochs=60, batch_size=256, lr=3e-3, warmup=0.05, log_every=5, precision="fp32",
    method_options={"temperature": 0.2},
    view_options={"hflip": 0.0, "crop_scale": (0.4, 1.0)},   # mirrored digits change meaning
)

COLUMNS = [  # (header, protocol, labels per class)
    ("linear 5/class", "linear", 5),
    ("linear all", "linear", None),
    ("kNN 5/class", "knn", 5),
    ("kNN all", "knn", None),
    ("k-means NMI", "cluster", None),
]


def compare(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    out = {}
    for header, protocol, k in COLUMNS:
        result = run_protocol(protocol, train_x, train_y, test_x, test_y, labels_per_class=k)
        out[header] = result["nmi"] if protocol == "cluster" else result["accuracy"]
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    headers = [h for h, _, _ in COLUMNS]
    width = max(map(len, rows)) + 2
    lines = ["features".ljust(width) + "  ".join(f"{h:>14s}" for h in headers)]
    for name, scores in rows.items():
        lines.append(name.ljust(width) + "  ".join(f"{scores[h]:14.3f}" for h in headers))
    return "\n".join(lines)


def plots(run_dir: Path, history: list[dict], features: np.ndarray, labels: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history])
    ax.set(xlabel="step", ylabel="NT-Xent loss", title="SimCLR pretraining on digits")
    fig.tight_layout()
    atomic_write(run_dir / "loss_curve.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)

    points = TSNE(2, init="pca", random_state=0, perplexity=30).fit_transform(features)
    fig, ax = plt.subplots(figsize=(5, 5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8)
    ax.legend(*scatter.legend_elements(), title="digit", fontsize=7, loc="best", markerscale=0.8)
    ax.set(title="t-SNE of SimCLR features (digits test split)", xticks=[], yticks=[])
    fig.tight_layout()
    atomic_write(run_dir / "embedding_tsne.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def run_quickstart(run_dir: Path | None = None, epochs: int | None = None) -> dict:
    start = time.perf_counter()
    run_dir = run_dir or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")
    train_set, test_set = load_data("digits", "train"), load_data("digits", "test")
    cfg = QUICKSTART if epochs is None else TrainConfig.from_dict({**QUICKSTART.to_dict(), "epochs": epochs})
    print(f"selfmeta quickstart: SimCLR + Conv-4 on {len(train_set)} unlabeled digits, {cfg.epochs} epochs -> {run_dir}")
    result = train(cfg, train_set, run_dir, data_info={"path": "digits", "split": "train"})

    train_y, test_y = train_set.y.numpy(), test_set.y.numpy()
    pixels = [to_unit(d.x).flatten(1).numpy() for d in (train_set, test_set)]
    features = [embed(result.method.backbone, d).numpy() for d in (train_set, test_set)]
    rows = {
        "raw pixels": compare(pixels[0], train_y, pixels[1], test_y),
        "selfmeta SimCLR": compare(features[0], train_y, features[1], test_y),
    }
    plots(run_dir, result.history, features[1], test_y)
    seconds = time.perf_counter() - start
    summary = {"results": rows, "train_seconds": round(result.elapsed, 1), "total_seconds": round(seconds, 1),
               "split": "digits: fixed stratified 80/20 split, seed 0", "run_dir": str(run_dir)}
    atomic_write(run_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    print(f"\nTest accuracy (NMI for k-means) on the {len(test_set)} held-out digits:\n{table(rows)}")
    print(f"\nTrained for {result.elapsed:.0f} s, {seconds:.0f} s in all. Wrote {run_dir}/: encoder.safetensors, "
          "config.json, metrics.jsonl, results.json, loss_curve.png, embedding_tsne.png")
    return summary
