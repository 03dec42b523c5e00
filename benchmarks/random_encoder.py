"""An untrained encoder saved as a run directory, the "random init" baseline of the benchmark tables.

    python benchmarks/random_encoder.py OUT_DIR --data ../shared/data/omniglot [--encoder conv4 --seed 0]
    selfmeta evaluate OUT_DIR --data ../shared/data/omniglot --split test --protocol fewshot

The weights are PyTorch's default initialization under ``--seed``; the input normalization is fitted on
the train split, as in a training run. Batch norm holds its initial statistics (mean 0, variance 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfmeta.data import load_data
from selfmeta.encoders import Backbone, build_encoder
from selfmeta.engine.checkpoint import WEIGHTS, save_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import NORMALIZATION_SAMPLE, describe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--encoder", default="conv4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_data(args.data, "train")
    normalize = data.spec.normalizer(data.take(torch.arange(min(len(data), NORMALIZATION_SAMPLE))))
    backbone = Backbone(normalize, build_encoder(args.encoder, data.input_shape, data.modality))
    description = describe(TrainConfig(method="untrained", encoder=args.encoder, steps=1), data)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / WEIGHTS, backbone.state_dict(), description)
    print(f"untrained {args.encoder} (seed {args.seed}) written to {out / WEIGHTS}")


if __name__ == "__main__":
    main()
