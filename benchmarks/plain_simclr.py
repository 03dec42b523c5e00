"""The plain reference the foundation issue measures against: a ~60-line SimCLR.

Eager Conv-4, affine-crop and brightness views (torch only), AdamW, batch 256, no tricks. Used only to
measure its training throughput on this machine beside selfmeta's (benchmarks/throughput.py).

    python benchmarks/plain_simclr.py --steps 30
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv4() -> nn.Sequential:
    layers, c = [], 1
    for _ in range(4):
        layers += [nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
        c = 64
    return nn.Sequential(*layers, nn.Flatten())


def view(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    s = torch.empty(b).uniform_(0.6, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = torch.empty(b, 2).uniform_(-0.2, 0.2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False)
    return (x * torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)).clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = conv4()
    head = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128))
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
    data = torch.rand(args.batch * 4, 1, 28, 28)
    times = []
    for step in range(args.steps):
        x = data[torch.randint(len(data), (args.batch,))]
        t0 = time.perf_counter()
        loss = nt_xent(head(encoder(view(x))), head(encoder(view(x))))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    median = sorted(times[5:])[len(times[5:]) // 2]
    print(f"plain SimCLR Conv-4 28x28 batch {args.batch}: {args.batch / median:.0f} samples/s (median step {median * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
