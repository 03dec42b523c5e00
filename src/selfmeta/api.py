"""The scikit-learn estimator: ``SelfSupervised(method="simclr", encoder="conv4").fit(X).transform(X)``.

It follows scikit-learn's contract: ``__init__`` only stores its arguments, ``fit`` validates and trains
and returns ``self``, learned state ends in ``_``, ``transform`` checks it is fitted, ``clone`` works, and
it fits in a ``Pipeline``::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    pipe = make_pipeline(SelfSupervised(encoder="conv4", input_shape=(1, 8, 8), epochs=20), LogisticRegression())
    pipe.fit(X_train, y_train)   # y is ignored by SelfSupervised: it learns without labels
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from selfmeta.data.dataset import Dataset
from selfmeta.engine.checkpoint import load_weights, save_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import describe, embed, rebuild_backbone
from selfmeta.engine.trainer import train
from selfmeta.errors import SelfmetaError


def as_dataset(X: Any, input_shape: tuple[int, ...] | None, y: Any = None) -> Dataset:
    """Arrays or tensors -> Dataset. (N, D) rows are a table unless ``input_shape`` = (C, H, W) reshapes
    them into images; (N, H, W) and (N, C, H, W) are images (uint8 0..255, or floats in [0, 1])."""
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if x.ndim == 0 or x.numel() == 0:
        raise SelfmetaError("X is empty")
    if x.is_complex() or x.dtype == torch.bool:
        raise SelfmetaError(f"X must be real numbers, got {x.dtype}")
    if input_shape is not None:
        if tuple(x.shape[1:]) != tuple(input_shape) and (x.ndim != 2 or x.shape[1] != int(np.prod(input_shape))):
            raise SelfmetaError(f"cannot view rows of shape {tuple(x.shape[1:])} as input_shape {tuple(input_shape)}")
        x = x.reshape(len(x), *input_shape)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim not in (2, 4):
        raise SelfmetaError(f"X must be (N, D), (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = x.float()
    labels, classes = None, []
    if y is not None:
        classes_arr, inverse = np.unique(np.asarray(y), return_inverse=True)
        labels, classes = torch.as_tensor(inverse, dtype=torch.long), [str(c) for c in classes_arr]
    return Dataset(x, labels, classes, "image" if x.ndim == 4 else "table", "X")


class SelfSupervised(TransformerMixin, BaseEstimator):
    """Learn an encoder without labels; ``transform`` gives its frozen features.

    Args:
        method: a registered method (``selfmeta list``), e.g. ``"simclr"``.
        encoder: ``"mlp"`` (tables, flat vectors), ``"conv4"`` or ``"resnet18"`` (images).
        input_shape: (C, H, W) to read flat rows as images (e.g. (1, 8, 8) for digits); None keeps X's shape.
        epochs, time_budget: stop after this many epochs or seconds, whichever comes first.
        batch_size, lr, optimizer, weight_decay, warmup, precision: as in ``selfmeta pretrain``.
        method_options, view_options, encoder_options: dicts of options (``{"temperature": 0.5}``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        random_state: seed.
        verbose: show a progress bar.

    Attributes:
        backbone_: the trained normalization + encoder.
        n_features_out_: size of ``transform``'s output.
        history_: logged training records.
    """

    def __init__(
        self, method: str = "simclr", encoder: str = "conv4", input_shape: tuple[int, ...] | None = None,
        epochs: int | None = 50, time_budget: float | None = None, batch_size: int = 256, lr: float | None = None,
        optimizer: str = "adamw", weight_decay: float | None = None, warmup: float = 0.05,
        precision: str = "fp32", method_options: dict | None = None, view_options: dict | None = None,
        encoder_options: dict | None = None, device: str = "auto", random_state: int = 0, verbose: bool = False,
    ) -> None:
        self.method = method
        self.encoder = encoder
        self.input_shape = input_shape
        self.epochs = epochs
        self.time_budget = time_budget
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.precision = precision
        self.method_options = method_options
        self.view_options = view_options
        self.encoder_options = encoder_options
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _config(self) -> TrainConfig:
        return TrainConfig(
            method=self.method, encoder=self.encoder, epochs=self.epochs, time_budget=self.time_budget,
            batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
            warmup=self.warmup, seed=self.random_state, device=self.device, precision=self.precision,
            method_options=dict(self.method_options or {}), view_options=dict(self.view_options or {}),
            encoder_options=dict(self.encoder_options or {}),
        )

    def fit(self, X: Any, y: Any = None) -> "SelfSupervised":
        """Train on X without labels (``y`` is accepted for Pipeline compatibility and ignored)."""
        cfg = self._config()
        data = as_dataset(X, self.input_shape)
        result = train(cfg, data, run_dir=None, progress=self.verbose)
        self.backbone_ = result.method.backbone.cpu().eval()
        self.description_ = describe(cfg, data)
        self.n_features_in_ = int(np.prod(data.input_shape))
        self.n_features_out_ = self.backbone_.num_features
        self.history_ = result.history
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "backbone_")
        data = as_dataset(X, self.input_shape)
        if list(data.input_shape) != self.description_["input_shape"]:
            raise SelfmetaError(
                f"X has items of shape {data.input_shape}; the model was fitted on {tuple(self.description_['input_shape'])}"
            )
        device = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        features = embed(self.backbone_, data.x, device=device).numpy()
        self.backbone_.cpu()
        return features

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "backbone_")
        return np.array([f"selfsupervised{i}" for i in range(self.n_features_out_)], dtype=object)

    def save(self, path: str | Path) -> None:
        """Save the fitted estimator to one ``.safetensors`` file (weights + parameters as metadata)."""
        check_is_fitted(self, "backbone_")
        description = {**self.description_, "params": self.get_params(), "n_features_in": self.n_features_in_}
        save_weights(Path(path), self.backbone_.state_dict(), description)

    @classmethod
    def load(cls, path: str | Path) -> "SelfSupervised":
        """Load an estimator saved by ``save``; no pickle is involved."""
        state, description = load_weights(Path(path))
        if "params" not in description:
            raise SelfmetaError(f"{path}: not a saved SelfSupervised estimator")
        params = description.pop("params")
        if params.get("input_shape") is not None:
            params["input_shape"] = tuple(params["input_shape"])
        estimator = cls(**params)
        estimator.backbone_ = rebuild_backbone(description, state)
        estimator.n_features_in_ = description.pop("n_features_in")
        estimator.description_ = description
        estimator.n_features_out_ = estimator.backbone_.num_features
        estimator.history_ = []
        return estimator
