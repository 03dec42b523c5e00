"""Training throughput on text: whole SimCLR steps (two views, encoder, projection head, AdamW) on SMS spam
messages, for each text encoder, in fp32 and bf16. One process, one thread.

Tokens per second count the tokens of the messages in the batch (after the tokenizer's 128-token cut),
once per message, not per view: what a user's corpus goes through. The tokenizer is the default one
(WordPiece, 8,000 tokens) trained on the train split.

    python benchmarks/text_throughput.py [--steps 12] [--batch 256]

Prints a Markdown table; medians over the timed steps (the first 3 are warm-up).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfmeta.data import load_data
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import build_method, fit_preprocessor
from selfmeta.engine.optim import build_optimizer
from selfmeta.runtime import cpu_description, resolve_precision
from throughput import time_steps, training_step

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sms-spam" / "SMSSpamCollection"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = fit_preprocessor(TrainConfig(), load_data(args.data, "train"))
    spec = data.spec
    x = spec.to_model(data.take(torch.arange(args.batch)), "cpu")
    tokens = int((x != 0).sum())
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"CPU: {cpu_description()}, one thread; SimCLR, batch {args.batch} messages ({tokens:,} tokens), median "
          f"of {args.steps - 3} steps; precision=auto here is {auto}\n")
    print("| encoder | precision | messages/s | tokens/s |")
    print("|---|---|---:|---:|")
    for encoder in ("fasttext", "transformer"):
        for bf16 in (False, True):
            cfg = TrainConfig(method="simclr", encoder=encoder, batch_size=args.batch, epochs=1)
            method = build_method(cfg, data)
            step = training_step(method, build_optimizer("adamw", method, 1e-3, 1e-4), x, torch.arange(args.batch), bf16)
            t = time_steps(step, args.steps)
            print(f"| {encoder} | {'bf16' if bf16 else 'fp32'} | {args.batch / t:,.0f} | {tokens / t:,.0f} |")


if __name__ == "__main__":
    main()
