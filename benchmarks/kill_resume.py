"""Kill a pretraining run with SIGKILL mid-training, resume it, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py [--out runs/kill-resume] [--data digits] [--epochs 30]

Runs the CLI as a user would: once uninterrupted (A), once killed (SIGKILL) when its checkpoint has
passed 40% of the steps and then restarted with --resume (B). Prints the step counts, whether the loss
curves agree step by step, and whether the final weights are identical; writes loss_curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/kill-resume")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    exe = [sys.executable, "-m", "selfmeta", "pretrain", "--data", args.data, "--epochs", str(args.epochs),
           "--no-progress", "batch_size=128", "views.hflip=0", "log_every=1"]
    a, b = out / "A", out / "B"
    subprocess.run(exe + ["--out", str(a)], check=True, stdout=subprocess.DEVNULL)
    total = records(a)[-1]["step"]

    proc = subprocess.Popen(exe + ["--out", str(b)], stdout=subprocess.DEVNULL)
    ckpt = b / "checkpoint.pt"
    while proc.poll() is None:
        if ckpt.is_file():
            step = torch.load(ckpt, weights_only=True)["step"]
            if step >= 0.4 * total:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    logged = records(b)[-1]["step"]
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    print(f"killed with SIGKILL (exit {proc.returncode}) after logging step {logged}; last checkpoint at step {killed_at}")
    subprocess.run(exe + ["--out", str(b), "--resume"], check=True, stdout=subprocess.DEVNULL)

    ra, rb = records(a), records(b)
    steps_b = [r["step"] for r in rb]
    print(f"steps: uninterrupted {ra[-1]['step']}, killed + resumed {rb[-1]['step']}")
    print(f"resumed log has every step once: {steps_b == list(range(1, rb[-1]['step'] + 1))}")
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(ra, rb))
    print(f"largest loss difference between the two curves at the same step: {diff:.3g}")
    wa, wb = load_file(str(a / "encoder.safetensors")), load_file(str(b / "encoder.safetensors"))
    print(f"final encoder weights identical: {all(torch.equal(wa[k], wb[k]) for k in wa)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in ra], [r["loss"] for r in ra], label="uninterrupted", lw=3, alpha=0.4)
    ax.plot(steps_b, [r["loss"] for r in rb], label="killed at step %d, resumed" % logged, lw=1)
    ax.axvline(killed_at, color="grey", ls=":", label="checkpoint resumed from")
    ax.set(xlabel="step", ylabel="loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    print(f"wrote {out / 'loss_curves.png'}")


if __name__ == "__main__":
    main()
