"""fp32 against bf16 autocast for a whole Conv-4 SimCLR step (batch 256, 28x28), on this CPU as it is and
with its instruction set capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), which is
what a laptop without AVX-512 BF16 runs. Each setting in its own process, one thread.

    python benchmarks/precision.py [--steps 20]

What ``precision=auto`` decides on each is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def child(steps: int) -> None:
    import torch

    from throughput import selfmeta_step, time_steps

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rates = {}
    for precision in ("fp32", "bf16"):
        step, _, _, _ = selfmeta_step("conv4", (1, 28, 28), 256, True, precision == "bf16", {"hflip": 0.0})
        rates[precision] = 256 / time_steps(step, steps)
    print(json.dumps(rates))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.steps)
        return
    from selfmeta.runtime import cpu_description

    print(f"CPU: {cpu_description()}; Conv-4 SimCLR step, batch 256, channels_last, one thread, "
          f"median of {args.steps - 3} steps\n")
    print("| instruction set | fp32 samples/s | bf16 samples/s | bf16 / fp32 | precision=auto on such a CPU |")
    print("|---|---:|---:|---:|---|")
    here = os.path.dirname(os.path.abspath(__file__))
    for label, extra, auto in (("as the CPU has it", {}, None), ("capped at AVX2 (a laptop)", AVX2_ONLY, "fp32")):
        env = {**os.environ, **extra, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], env=env,
                             capture_output=True, text=True, check=True)
        rates = json.loads(out.stdout.strip().splitlines()[-1])
        if auto is None:
            import torch

            from selfmeta.runtime import resolve_precision

            auto = resolve_precision("auto", torch.device("cpu"))
        print(f"| {label} | {rates['fp32']:.0f} | {rates['bf16']:.0f} | {rates['bf16'] / rates['fp32']:.2f}x | {auto} |")


if __name__ == "__main__":
    main()
