"""Training throughput of a whole SimCLR step (both views, augmentation included), batch 256, CPU.

Measures in one process, one after the other (never two at once on this 2-core machine):
- the plain reference (benchmarks/plain_simclr.py) for the ratio the foundation issue asks for;
- selfmeta's step with Conv-4 on 28x28 and ResNet-18 on 32x32: NCHW fp32, channels_last fp32 (the
  default), channels_last with bf16 autocast (``precision=bf16``);
- the share of the step spent making views, and selfmeta's fused views against the same augmentations
  composed from kornia.augmentation.

    python benchmarks/throughput.py [--steps 20] [--resnet-steps 6]

Prints a Markdown table; medians over the timed steps (the first 3 are warm-up).
"""

from __future__ import annotations

import argparse
import platform
import time

import kornia.augmentation as K
import torch

import plain_simclr
from selfmeta.data.dataset import Dataset
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import build_method
from selfmeta.engine.optim import build_optimizer

WARMUP = 3


def median(xs: list[float]) -> float:
    xs = sorted(xs[WARMUP:])
    return xs[len(xs) // 2]


def time_steps(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def training_step(method, opt, x: torch.Tensor, index: torch.Tensor, bf16: bool):
    """One optimizer step of ``method`` on the batch ``x``, as the engine takes it (autocast only)."""

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = method(x, index)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def selfmeta_step(encoder: str, shape: tuple[int, int, int], batch: int, channels_last: bool, bf16: bool, views: dict):
    data = Dataset(torch.randint(0, 256, (batch * 2, *shape), dtype=torch.uint8), modality="image")
    cfg = TrainConfig(encoder=encoder, batch_size=batch, channels_last=channels_last, view_options=views)
    method = build_method(cfg, data)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    opt = build_optimizer("adamw", method, 1e-3, 1e-4)
    x = data.x[:batch].float() / 255
    index = torch.arange(batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    step = training_step(method, opt, x, index, bf16)

    def make_views() -> None:
        with torch.no_grad():
            torch.cat([method.views(x), method.views(x)])

    return step, make_views, method, x


def kornia_pipeline(shape: tuple[int, int, int]) -> K.AugmentationSequential:
    """The same augmentations as selfmeta's ImageViews, composed from kornia.augmentation."""
    augs = [K.RandomResizedCrop(shape[1:], scale=(0.2, 1.0)), K.RandomHorizontalFlip()]
    if shape[0] == 3:
        augs += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    else:
        augs += [K.ColorJitter(0.4, 0.4, 0.0, 0.0, p=0.8)]
    return K.AugmentationSequential(*augs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resnet-steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    b = args.batch
    rows = []

    # The plain reference, same process, same data size.
    encoder = plain_simclr.conv4()
    head = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128))
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
    xp = torch.rand(b, 1, 28, 28)

    def plain_step() -> None:
        loss = plain_simclr.nt_xent(head(encoder(plain_simclr.view(xp))), head(encoder(plain_simclr.view(xp))))
        opt.zero_grad()
        loss.backward()
        opt.step()

    plain = time_steps(plain_step, args.steps)
    rows.append(("plain reference, Conv-4 28x28", b / plain, None))

    for encoder_name, shape, steps in (("conv4", (1, 28, 28), args.steps), ("resnet18", (3, 32, 32), args.resnet_steps)):
        views = {"hflip": 0.0} if shape[0] == 1 else {}
        for channels_last, bf16 in ((False, False), (True, False), (True, True)):
            step, make_views, method, x = selfmeta_step(encoder_name, shape, b, channels_last, bf16, views)
            t_step = time_steps(step, steps)
            t_views = time_steps(make_views, steps)
            layout = "channels_last" if channels_last else "NCHW"
            label = f"selfmeta SimCLR, {encoder_name} {shape[1]}x{shape[2]}, {layout}, {'bf16 autocast' if bf16 else 'fp32'}"
            rows.append((label, b / t_step, t_views / t_step))
        # kornia.augmentation composition of the same views, for comparison with the fused views.
        pipeline = kornia_pipeline(shape)
        with torch.no_grad():
            t_kornia = time_steps(lambda: torch.cat([pipeline(x), pipeline(x)]), steps)
        rows.append((f"  views only: kornia.augmentation pipeline, {shape[1]}x{shape[2]}", b / t_kornia, None))
        rows.append((f"  views only: selfmeta fused views, {shape[1]}x{shape[2]}", b / t_views, None))

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch {b}, median of timed steps\n")
    print("| what | samples/s | views' share of the step | vs plain |")
    print("|---|---:|---:|---:|")
    for label, rate, share in rows:
        share_text = f"{100 * share:.0f}%" if share is not None else ""
        ratio = "" if label.startswith("  views") else f"{rate / (b / plain):.2f}x"
        print(f"| {label} | {rate:.0f} | {share_text} | {ratio} |")


if __name__ == "__main__":
    main()
