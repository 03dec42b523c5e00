"""The scikit-learn estimator: ``SelfSupervised(method="simclr", encoder="conv4").fit(X).transform(X)``.

It follows scikit-learn's contract: ``__init__`` only stores its arguments, ``fit`` validates and trains
and returns ``self``, learned state ends in ``_``, ``transform`` checks it is fitted, ``clone`` works, and
it fits in a ``Pipeline``::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    pipe = make_pipeline(SelfSupervised(encoder="conv4", input_shape=(1, 8, 8), epochs=20), LogisticRegression())
    pipe.fit(X_train, y_train)   # y is ignored by SelfSupervised: it learns without labels

Clustering methods that assign items to clusters (``dec``) also give ``predict``::

    clusters = SelfSupervised(method="dec", method_options={"num_clusters": 10}, input_shape=(1, 8, 8)).fit(X).predict(X)

``FewShotLearner`` meta-trains on labelled classes and adapts to new classes from a few examples, with the
learner's own adaptation (nearest prototype for ProtoNet and metric learners, the meta-learned inner loop
for MAML, Meta-SGD and Reptile)::

    learner = FewShotLearner(method="protonet", ways=20, shots=1, queries=5, steps=2000).fit(X_train, y_train)
    y_pred = learner.adapt(X_support, y_support).predict(X_query)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_array, check_is_fitted

from selfmeta.data.dataset import Dataset
from selfmeta.engine.checkpoint import load_weights, save_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import (
    build_method, check_compatible, check_description, embed, placeholder_data, rebuild_backbone,
)
from selfmeta.engine.trainer import train
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS, Method
from selfmeta.modalities import get_modality

METHOD_PREFIX = "method."  # saved tensors of the method's own state (heads, centroids), beside the backbone's


# The modality of an array whose estimator names none: rows are a table, (N, H, W) and (N, C, H, W) images;
# and of a sequence of strings: documents.
ARRAY_MODALITIES = {2: "table", 3: "image", 4: "image"}
DOCUMENT_MODALITY = "text"


def as_dataset(X: Any, input_shape: tuple[int, ...] | None, y: Any = None, min_items: int = 1,
               modality: str | None = None) -> Dataset:
    """Arrays or tensors -> Dataset of ``modality`` (None: by the array's dimensions, ``ARRAY_MODALITIES``).

    The modality turns the array into its items (``Modality.from_array``): (N, H, W) grey images get a
    channel, a univariate series (N, T) becomes (N, 1, T). ``input_shape`` = (C, H, W) reads flat rows as
    images. Checked by scikit-learn's ``check_array``, so bad input gets scikit-learn's own messages
    (sparse, complex, NaN, 1-D, too few samples...), as SelfmetaError (a ValueError); objects that are not
    numbers keep its TypeError. NaN passes only where the modality has missing values (series).
    """
    spec = get_modality(modality) if modality is not None else None
    if (spec is not None and spec.preprocessor is not None) or (spec is None and is_documents(X)):
        return raw_dataset(X, y, min_items, modality or DOCUMENT_MODALITY)
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        x = check_array(X, accept_sparse=False, dtype="numeric", allow_nd=True, ensure_min_samples=min_items,
                        ensure_all_finite="allow-nan" if spec is not None and spec.missing_values else True,
                        input_name="X")
    except ValueError as exc:
        raise SelfmetaError(" ".join(str(exc).split())) from None
    if x.dtype == bool:
        raise SelfmetaError(f"X must be real numbers, got {x.dtype}")
    x = torch.from_numpy(np.require(x, requirements=("C", "W")))  # a read-only array (memmap) is copied
    if input_shape is not None:
        if tuple(x.shape[1:]) != tuple(input_shape) and (x.ndim != 2 or x.shape[1] != int(np.prod(input_shape))):
            raise SelfmetaError(f"cannot view rows of shape {tuple(x.shape[1:])} as input_shape {tuple(input_shape)}")
        x = x.reshape(len(x), *input_shape)
    if spec is None:
        if x.ndim not in ARRAY_MODALITIES:
            raise SelfmetaError(f"X must be (N, D), (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}")
        modality, spec = ARRAY_MODALITIES[x.ndim], get_modality(ARRAY_MODALITIES[x.ndim])
    x = spec.from_array(x)
    return Dataset(x, *_labels(y, len(x)), modality, "X")


def _labels(y: Any, n: int) -> tuple[torch.Tensor | None, list[str]]:
    """Labels of any type -> (int64 class indices or None, the sorted class names)."""
    if y is None:
        return None, []
    y = np.asarray(y)
    if y.shape != (n,):
        raise SelfmetaError(f"y must hold one label per item of X: {n} items, y of shape {y.shape}")
    classes, inverse = np.unique(y, return_inverse=True)
    return torch.as_tensor(inverse, dtype=torch.long), [str(c) for c in classes]


def is_documents(X: Any) -> bool:
    """Whether X is a sequence of strings (text documents): a list, tuple, pandas Series or 1-D array of str."""
    if not isinstance(X, (list, tuple)):
        kind = getattr(getattr(X, "dtype", None), "kind", None)  # numpy arrays, pandas Series and Index
        if kind not in ("O", "U") or getattr(X, "ndim", None) != 1:
            return False
    return len(X) > 0 and all(isinstance(d, str) for d in X)


def raw_dataset(X: Any, y: Any, min_items: int, modality: str) -> Dataset:
    """Raw items (text: a sequence of str; interactions: a sequence of item-ID sequences) -> a raw Dataset of
    ``modality``, which its preprocessor (fitted by ``fit``) prepares; the modality checks them
    (``Modality.raw_items``)."""
    raw = get_modality(modality).raw_items(X, min_items)
    return Dataset(None, *_labels(y, len(raw)), modality, "X", raw)


def _check_features(estimator: Any, data: Dataset) -> Dataset:
    """Items of the shape the estimator was fitted on, said in scikit-learn's words for tables; prepared by
    its preprocessor (text: tokenized by the tokenizer fitted with it)."""
    if data.x is None:
        return check_compatible(estimator.description_, data)
    fitted = tuple(estimator.description_["input_shape"])
    if data.spec.fits(fitted, data.input_shape):
        return data
    name = type(estimator).__name__
    if len(fitted) == 1 and len(data.input_shape) == 1:
        raise SelfmetaError(f"X has {data.input_shape[0]} features, but {name} is expecting {fitted[0]} features as input")
    raise SelfmetaError(f"X has items of shape {data.input_shape}; {name} was fitted on {fitted}")


def _method_can_predict(estimator: "SelfSupervised") -> bool:
    """``available_if`` check: the fitted method (or, before fitting, the configured one) has ``predict``.

    Raises AttributeError with the reason, which ``hasattr(estimator, "predict")`` turns into False and a
    call to ``estimator.predict`` shows to the user.
    """
    if "method_" in vars(estimator):
        if estimator.method_ is None:
            raise AttributeError("predict: this estimator was saved without its method's state (fit it again)")
        cls = type(estimator.method_)
    else:
        try:
            cls = METHODS.get(estimator.method)
        except SelfmetaError:
            raise AttributeError(f"predict: unknown method {estimator.method!r}") from None
    if not callable(getattr(cls, "predict", None)):
        able = [n for n in METHODS.names() if callable(getattr(METHODS.get(n), "predict", None))]
        raise AttributeError(
            f"method {estimator.method!r} learns features, not clusters: it has no predict; use transform, or a "
            f"clustering method with predict ({', '.join(able) or 'none registered'})"
        )
    return True


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
        modality: the kind of items in X (``selfmeta list``), e.g. ``"series"`` for (N, C, T) arrays; None
            reads (N, D) as a table, (N, H, W) or (N, C, H, W) as images, and a list of strings as text.
        input_options: options of the modality's preprocessor: for text, the tokenizer trained on X
            (``{"vocab_size": 8000, "model": "wordpiece", "lowercase": True, "max_length": 128}``).
        tune: choose the settings on X first, as ``selfmeta tune`` does: short pilots scored without labels
            for 40% of ``time_budget`` (required), then the best continued for the rest. Options given here (lr,
            batch_size, the option dicts) are kept, not searched.

    Attributes:
        method_: the trained method (its ``backbone`` is ``backbone_``; heads, centroids).
        backbone_: the trained normalization + encoder.
        n_features_out_: size of ``transform``'s output.
        history_: logged training records.
        tune_: with ``tune=True``, the search: its trials (options, scores, state) and the winner.
    """

    def __init__(
        self, method: str = "simclr", encoder: str = "conv4", input_shape: tuple[int, ...] | None = None,
        epochs: int | None = 50, time_budget: float | None = None, batch_size: int | None = None, lr: float | None = None,
        optimizer: str = "adamw", weight_decay: float | None = None, warmup: float = 0.05,
        precision: str = "auto", method_options: dict | None = None, view_options: dict | None = None,
        encoder_options: dict | None = None, device: str = "auto", random_state: int = 0, verbose: bool = False,
        modality: str | None = None, input_options: dict | None = None, tune: bool = False,
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
        self.modality = modality
        self.input_options = input_options
        self.tune = tune

    def _config(self) -> TrainConfig:
        return TrainConfig(
            method=self.method, encoder=self.encoder, epochs=self.epochs, time_budget=self.time_budget,
            batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
            warmup=self.warmup, seed=self.random_state, device=self.device, precision=self.precision,
            method_options=dict(self.method_options or {}), view_options=dict(self.view_options or {}),
            encoder_options=dict(self.encoder_options or {}), input_options=dict(self.input_options or {}),
        )

    def fit(self, X: Any, y: Any = None) -> "SelfSupervised":
        """Train on X without labels (``y`` is accepted for Pipeline compatibility and ignored).

        A ``batch_size`` larger than X is capped to the number of items (scikit-learn fits small arrays).
        """
        cfg = self._config()
        data = self._training_data(X)
        if cfg.batch_size is not None and cfg.batch_size > len(data):
            cfg = replace(cfg, batch_size=len(data))
        if self.tune:
            result = self._tuned(cfg, data)
        else:
            result = train(cfg, data, run_dir=None, progress=self.verbose)
        self.method_ = result.method.cpu().eval()
        self.backbone_ = self.method_.backbone
        self.description_ = result.description
        self.n_features_in_ = int(np.prod(result.description["input_shape"]))
        self.n_features_out_ = self.backbone_.num_features
        self.history_ = result.history
        return self

    def _tuned(self, cfg: TrainConfig, data: Dataset) -> Any:
        from selfmeta.engine.tune import tune

        if self.time_budget is None:
            raise SelfmetaError("tune=True needs a time_budget: the search and the training share it")
        fixed = {k for k in ("lr", "batch_size") if getattr(self, k) is not None}
        for prefix, given in (("method", self.method_options), ("views", self.view_options)):
            fixed |= {f"{prefix}.{k}" for k in (given or {})}
        tuned = tune(replace(cfg, epochs=None), data, self.time_budget, None, fixed=fixed)
        self.tune_ = {"score": tuned.score, "winner": tuned.best.number, "winner_options": tuned.best.options,
                      "trials": [t.record() for t in tuned.trials]}
        return tuned.result

    def _training_data(self, X: Any) -> Dataset:
        return as_dataset(X, self.input_shape, min_items=2, modality=self.modality)

    def _checked_data(self, X: Any) -> Dataset:
        return _check_features(self, as_dataset(X, self.input_shape, modality=self.description_["modality"]))

    def _device(self) -> str:
        return "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "backbone_")
        data = self._checked_data(X)
        features = embed(self.backbone_, data, device=self._device()).numpy()
        self.backbone_.cpu()
        return features

    @available_if(_method_can_predict)
    def predict(self, X: Any, batch_size: int = 1024) -> np.ndarray:
        """Cluster ids (N,) int64 of the items of X, from a clustering method's ``predict`` (e.g. ``dec``).

        Only there when the method has ``predict``; otherwise ``hasattr(estimator, "predict")`` is False and
        calling it raises scikit-learn's AttributeError, whose cause (shown first) says why.
        """
        check_is_fitted(self, "method_")
        data = self._checked_data(X)
        method = self.method_.to(self._device()).eval()
        device = next(method.parameters()).device
        n = len(data)
        try:
            with torch.no_grad():
                ids = [method.predict(data.spec.to_model(data.take(torch.arange(i, min(i + batch_size, n))), device)).cpu()
                       for i in range(0, n, batch_size)]
        finally:
            method.cpu()
        return torch.cat(ids).numpy().astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 whatever the input
        return tags

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "backbone_")
        return np.array([f"selfsupervised{i}" for i in range(self.n_features_out_)], dtype=object)

    def save(self, path: str | Path) -> None:
        """Save the fitted estimator to one ``.safetensors`` file (weights + parameters as metadata).

        The backbone's tensors keep their names; the rest of the method's state (projection heads, DEC's
        centroids, pseudo-labels, MoCo's queue) is stored beside them as ``method.<name>``, so that ``load``
        rebuilds the whole method and ``predict`` works after loading.
        """
        check_is_fitted(self, "backbone_")
        method = getattr(self, "method_", None)
        description = {**self.description_, "params": self.get_params(), "n_features_in": self.n_features_in_,
                       "method_state": method is not None}
        tensors = dict(self.backbone_.state_dict())
        if method is not None:
            tensors.update({METHOD_PREFIX + k: v for k, v in method.state_dict().items() if not k.startswith("backbone.")})
        save_weights(Path(path), tensors, description)

    @classmethod
    def load(cls, path: str | Path) -> "SelfSupervised":
        """Load an estimator saved by ``save``; no pickle is involved."""
        state, description = load_weights(Path(path))
        description = check_description(description, path)
        params, n_features_in = description.pop("params", None), description.pop("n_features_in", None)
        if not isinstance(params, dict) or not isinstance(n_features_in, int):
            raise SelfmetaError(f"{path}: not a saved SelfSupervised estimator (no parameters in its metadata)")
        unknown = sorted(set(params) - set(cls().get_params()))
        if unknown:
            raise SelfmetaError(f"{path}: saved with parameters this version does not know: {', '.join(unknown)}")
        if params.get("input_shape") is not None:
            params["input_shape"] = tuple(params["input_shape"])
        estimator = cls(**params)
        backbone_state = {k: v for k, v in state.items() if not k.startswith(METHOD_PREFIX)}
        method_state = {k[len(METHOD_PREFIX) :]: v for k, v in state.items() if k.startswith(METHOD_PREFIX)}
        with_method = description.pop("method_state", False)  # files saved before the method was kept have none
        with torch.random.fork_rng(devices=[]):  # building draws random initial weights: leave the caller's RNG alone
            estimator.backbone_ = rebuild_backbone(description, backbone_state)
            estimator.method_ = estimator._rebuild_method(description, method_state) if with_method else None
        if estimator.method_ is not None:
            estimator.backbone_ = estimator.method_.backbone
        estimator.n_features_in_ = n_features_in
        estimator.description_ = description
        estimator.n_features_out_ = estimator.backbone_.num_features
        estimator.history_ = []
        return estimator

    def _rebuild_method(self, description: dict[str, Any], method_state: dict[str, torch.Tensor]) -> Method:
        """The method as ``fit`` built it (``build_method``), with the saved backbone and method tensors."""
        method = build_method(self._config(), placeholder_data(description))
        state = {**{f"backbone.{k}": v for k, v in self.backbone_.state_dict().items()}, **method_state}
        try:
            method.load_state_dict(state)
        except RuntimeError as exc:
            raise SelfmetaError(f"the saved method state does not fit method {self.method!r}: {exc}".splitlines()[0]) from None
        return method.eval()

# --- few-shot: meta-train on labelled classes, adapt to new ones ---------------------------------------------

def _adapted(learner: "FewShotLearner") -> bool:
    if "support_x_" not in vars(learner):
        raise AttributeError("predict: call adapt(X_support, y_support) first; it gives the classes to predict")
    return True


class FewShotLearner(TransformerMixin, BaseEstimator):
    """Meta-train an encoder on N-way K-shot episodes of labelled data; adapt it to new classes.

    Args:
        method: a registered meta-learner (``protonet``, ``maml``, ``fomaml``, ``metasgd``, ``reptile``,
            ``triplet``, ``contrastive``).
        encoder, input_shape: as in ``SelfSupervised`` (e.g. ``"conv4"`` and (1, 28, 28)).
        ways, shots, queries, tasks_per_step: the training episodes' shape and the meta-batch.
        steps, time_budget: stop after this many meta-steps or seconds, whichever comes first.
        lr, precision, method_options, encoder_options, device, random_state, verbose: as ``selfmeta metatrain``.
        modality: as in ``SelfSupervised``.

    Attributes:
        learner_: the trained meta-learner; backbone_: its normalization + encoder.
        classes_: the support's classes after ``adapt``.
    """

    def __init__(
        self, method: str = "protonet", encoder: str = "conv4", input_shape: tuple[int, ...] | None = None,
        ways: int = 5, shots: int = 1, queries: int = 15, tasks_per_step: int = 32, steps: int | None = 1000,
        time_budget: float | None = None, lr: float | None = None, precision: str = "auto",
        method_options: dict | None = None, encoder_options: dict | None = None, device: str = "auto",
        random_state: int = 0, verbose: bool = False, modality: str | None = None, input_options: dict | None = None,
    ) -> None:
        self.method = method
        self.encoder = encoder
        self.input_shape = input_shape
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.tasks_per_step = tasks_per_step
        self.steps = steps
        self.time_budget = time_budget
        self.lr = lr
        self.precision = precision
        self.method_options = method_options
        self.encoder_options = encoder_options
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.modality = modality
        self.input_options = input_options

    def _config(self) -> TrainConfig:
        return TrainConfig(
            method=self.method, encoder=self.encoder, epochs=None, steps=self.steps, time_budget=self.time_budget,
            tasks="labels", ways=self.ways, shots=self.shots, queries=self.queries,
            tasks_per_step=self.tasks_per_step, lr=self.lr, seed=self.random_state, device=self.device,
            precision=self.precision, method_options=dict(self.method_options or {}),
            encoder_options=dict(self.encoder_options or {}), input_options=dict(self.input_options or {}),
        )

    def fit(self, X: Any, y: Any) -> FewShotLearner:
        """Meta-train on episodes drawn from the classes of (X, y)."""
        if y is None:
            raise SelfmetaError("FewShotLearner requires y to be passed, but the target y is None (episodes are "
                                "drawn from its classes)")
        cfg = self._config()
        data = as_dataset(X, self.input_shape, y, min_items=2, modality=self.modality)
        result = train(cfg, data, run_dir=None, progress=self.verbose)
        self.learner_ = result.method.cpu().eval()
        self.backbone_ = self.learner_.backbone
        self.description_ = result.description
        self.n_features_in_ = int(np.prod(result.description["input_shape"]))
        self.history_ = result.history
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True                      # episodes are drawn from the classes of y
        tags.transformer_tags.preserves_dtype = ["float32"]   # features are float32 whatever the input
        return tags

    def _items(self, X: Any) -> Dataset:
        return _check_features(self, as_dataset(X, self.input_shape, modality=self.description_["modality"]))

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "backbone_")
        return embed(self.backbone_, self._items(X)).numpy()

    def adapt(self, X_support: Any, y_support: Any) -> FewShotLearner:
        """Remember a support set: a few labelled items of each new class (any number per class)."""
        check_is_fitted(self, "learner_")
        support = self._items(X_support)
        classes, y = np.unique(np.asarray(y_support), return_inverse=True)
        if len(y) != len(support):
            raise SelfmetaError(f"{len(support)} support items but {len(y)} labels")
        if len(classes) < 2:
            raise SelfmetaError("the support set needs at least 2 classes")
        self.support_x_ = support.spec.to_model(support.take(torch.arange(len(support))), "cpu")                   # (S, ...) model input
        self.support_y_, self.classes_ = torch.as_tensor(y, dtype=torch.long), classes
        return self

    @available_if(_adapted)
    def predict(self, X: Any, batch_size: int = 500) -> np.ndarray:
        """The support class of every query item of X. Only there after ``adapt``: until a support set is
        given there are no classes to predict (``hasattr(learner, "predict")`` is False)."""
        check_is_fitted(self, "support_x_")
        query = self._items(X)
        support = self.support_x_.unsqueeze(0)                                      # (1, S, ...)
        out = []
        for i in range(0, len(query), batch_size):
            batch = query.spec.to_model(query.take(torch.arange(i, min(i + batch_size, len(query)))), "cpu")
            logits = self.learner_.adapt_predict(support, self.support_y_, batch.unsqueeze(0))  # (1, B, N)
            out.append(logits[0].argmax(-1))
        return self.classes_[torch.cat(out).numpy()]


class Recommender(SelfSupervised):
    """Next-item recommendation from users' interaction sequences: SASRec and its self-supervised variants.

    ``X`` is a list of users' item IDs in time order (any hashable IDs, read as strings)::

        rec = Recommender(method="cl4srec", time_budget=120).fit(train_sequences)
        items, scores = rec.recommend(histories, k=10)    # (N, 10) item IDs and scores, seen items left out
        rec.score(test_sequences)                           # NDCG@10 of each sequence's last item, full ranking
        states = rec.transform(histories)                   # (N, d) users' states

    Args:
        method: ``sasrec``, ``cl4srec``, ``duorec`` or ``coldstart`` (``selfmeta list``).
        encoder: ``sasrec``.
        max_length: the most recent items kept per user (SASRec's L).
        item_info: side information, ``{item_id: {"name": "Toy Story (1995)", "categories": ["Comedy"]}}``;
            items seen a few times borrow from the names and categories they share with others.
        The others as in :class:`SelfSupervised`.
    """

    def __init__(
        self, method: str = "sasrec", encoder: str = "sasrec", max_length: int = 50, item_info: dict | None = None,
        epochs: int | None = None,
        time_budget: float | None = 60.0, batch_size: int | None = None, lr: float | None = None,
        optimizer: str = "adamw", weight_decay: float | None = None, warmup: float = 0.05, precision: str = "auto",
        method_options: dict | None = None, view_options: dict | None = None, encoder_options: dict | None = None,
        device: str = "auto", random_state: int = 0, verbose: bool = False,
    ) -> None:
        super().__init__(method=method, encoder=encoder, epochs=epochs, time_budget=time_budget,
                         batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay, warmup=warmup,
                         precision=precision, method_options=method_options, view_options=view_options,
                         encoder_options=encoder_options, device=device, random_state=random_state, verbose=verbose,
                         modality="interactions")
        self.max_length = max_length
        self.item_info = item_info

    def _config(self) -> TrainConfig:
        return replace(super()._config(), input_options={"max_length": self.max_length})

    def _training_data(self, X: Any) -> Dataset:
        data = super()._training_data(X)
        if self.item_info is not None:
            if not isinstance(self.item_info, dict):
                raise SelfmetaError("item_info must be a dict {item_id: {'name': ..., 'categories': [...]}}")
            data.info = {str(k): dict(v) for k, v in self.item_info.items()}
        return data

    def _rows(self, X: Any) -> Dataset:
        check_is_fitted(self, "backbone_")
        return self._checked_data(X)

    def recommend(self, X: Any, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best next items for each history of X: (item IDs (N, k) object, scores (N, k) float32),
        best first; items a user has are left out unless ``exclude_seen`` is False."""
        from selfmeta.evaluation.ranking import recommend

        if not isinstance(k, (int, np.integer)) or k < 1:
            raise SelfmetaError(f"k must be a whole number of at least 1, got {k!r}")
        data = self._rows(X)
        ids, scores = recommend(self.backbone_.cpu(), data, int(k), exclude_seen)
        vocabulary = data.preprocessor
        names = np.array([vocabulary.item_id(i) if np.isfinite(s) else None
                          for i, s in zip(ids.ravel(), scores.ravel())], dtype=object).reshape(ids.shape)
        return names, scores

    def score(self, X: Any, y: Any = None, k: int = 10) -> float:
        """NDCG@k of each sequence's last item given the items before it, ranked against every item (full
        ranking, the history's items left out); ``y`` is ignored."""
        from selfmeta.evaluation.ranking import evaluate_ranking, last_items, model_scores

        data = self._rows(X)
        histories, _ = last_items(data.items.long())
        result = evaluate_ranking(model_scores(self.backbone_.cpu(), histories), data, k)
        return result[f"ndcg@{k}"]
