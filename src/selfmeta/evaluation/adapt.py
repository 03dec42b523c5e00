"""Adaptation to new data with few labels: K labelled items per class, drawn S times (as ``few_labels``).

Two protocols beside the probes of :mod:`selfmeta.evaluation.protocols`:

``tip``: a Tip-Adapter cache on the frozen features (Zhang et al., "Tip-Adapter: Training-free Adaption of
CLIP for Few-shot Classification", ECCV 2022). The keys are the L2-normalized support features, the values
their one-hot labels; a query's cache logits are ``exp(-beta * (1 - q . k)) @ L`` (its cosine affinities to
the keys, sharpened by beta, summed per class). They are added to the logits of a linear head fitted on the
support features: ``logits = head + alpha * cache``.

- The head is the linear probe's (:func:`~selfmeta.evaluation.protocols.linear_probe`): multinomial logistic
  regression, C=1, on standardized features. Its logits are its log-probabilities (``predict_log_proba``);
  they differ from ``decision_function`` by a constant per query, which changes no prediction.
- alpha (0, 0.5, 1, 2, 4) and beta (1, 3, 5.5, 10) are chosen per draw on the support set alone, by
  cross-validation (:func:`select_tip`), never on the test split. Plain leave-one-out with the head fitted
  once on every support item would be blind: with a few items in many dimensions that head separates the
  support set perfectly, so the held-out item is always right at alpha = 0 and the cache never wins. So a
  held-out item is scored by a head *and* a cache built without it: stratified folds, as many as the
  smallest class has items up to 10 (K <= 10 per class: fold j holds the j-th item of every class, leave
  one out per class); the most accurate pair wins, ties going to the lower cross-entropy of the blended
  logits, then to the first in grid order (smaller alpha, then smaller beta). With one item per class
  nothing can be held out: Tip-Adapter's defaults alpha = 1, beta = 5.5.

``finetune``: the whole backbone fine-tuned on the support items (:func:`finetune_backbone`) with a linear
head on its L2-normalized features, initialized at the prototype classifier of the support set; then the
test split is classified by the tuned copy. Items go through ``data.take`` and ``spec.to_model`` only, so
every modality works alike.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.metrics import classification_scores
from selfmeta.evaluation.protocols import few_labels, sample_per_class

ADAPT_PROTOCOLS = ("tip", "finetune")
TIP_ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)
TIP_BETAS = (1.0, 3.0, 5.5, 10.0)
TIP_DEFAULT = (1.0, 5.5)   # (alpha, beta) where the support set has a class of one item: nothing to hold out
TIP_MAX_FOLDS = 10
# finetune_backbone's defaults; FINETUNE_OPTIONS are the ones `selfmeta evaluate --protocol finetune` takes
FINETUNE_DEFAULTS: dict[str, Any] = {"steps": 50, "lr": 1e-4, "head_lr": 1e-2, "weight_decay": 0.01, "batch_size": 32}
FINETUNE_OPTIONS = tuple(FINETUNE_DEFAULTS)


# ------------------------------------------------------------------------------------------------ tip

def _floats(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().cpu()


def cache_logits(
    support_x: np.ndarray | torch.Tensor, support_y: np.ndarray | torch.Tensor, query_x: np.ndarray | torch.Tensor,
    beta: float, num_classes: int, chunk: int = 4096,
) -> torch.Tensor:
    """Tip-Adapter's cache: support_x (S, d) keys, support_y (S,) their classes in [0, num_classes), query_x
    (Q, d) -> (Q, num_classes) float64 = exp(-beta * (1 - cos(query, key))) @ one_hot(support_y)."""
    keys = F.normalize(_floats(support_x), dim=1)                              # (S, d)
    labels = torch.as_tensor(np.asarray(support_y), dtype=torch.long).cpu()    # (S,)
    if labels.shape != (len(keys),) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes):
        seen = f", from {int(labels.min())} to {int(labels.max())}" if labels.numel() else ""
        raise SelfmetaError(f"the cache needs one label per support item, classes in [0, {num_classes}); got labels "
                            f"of shape {tuple(labels.shape)}{seen} for {len(keys)} items")
    values = F.one_hot(labels, num_classes).double()                           # (S, C)
    queries = F.normalize(_floats(query_x), dim=1)                             # (Q, d)
    out = [torch.exp(-beta * (1.0 - queries[i : i + chunk] @ keys.T)) @ values  # (q, S) @ (S, C)
           for i in range(0, len(queries), chunk)]
    return torch.cat(out) if out else torch.zeros(0, num_classes, dtype=torch.float64)


def tip_adapter_logits(
    support_x: np.ndarray | torch.Tensor, support_y: np.ndarray | torch.Tensor, query_x: np.ndarray | torch.Tensor,
    alpha: float, beta: float, head_logits: np.ndarray | torch.Tensor,
) -> np.ndarray | torch.Tensor:
    """Tip-Adapter's logits ``head_logits + alpha * exp(-beta * (1 - q K^T)) @ L``, a pure function.

    support_x (S, d) and query_x (Q, d) features (L2-normalized here), support_y (S,) class indices in
    [0, C), head_logits (Q, C) -> (Q, C) float64, an array or a tensor as ``head_logits`` is.
    """
    as_array = not isinstance(head_logits, torch.Tensor)
    head = _floats(head_logits)                                                # (Q, C)
    if head.ndim != 2 or len(head) != len(query_x):
        raise SelfmetaError(f"head_logits must be (queries, classes) = ({len(query_x)}, C); got {tuple(head.shape)}")
    out = head + alpha * cache_logits(support_x, support_y, query_x, beta, head.shape[1])
    return out.numpy() if as_array else out


def _head(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, num_classes: int) -> np.ndarray:
    """The linear probe's head fitted on (train_x, train_y in [0, num_classes)): (Q, num_classes) log-probabilities
    of query_x (a class absent from train_y gets -inf)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(train_x, train_y)
    out = np.full((len(query_x), num_classes), -np.inf)
    out[:, clf.classes_] = clf.predict_log_proba(query_x)
    return out


def select_tip(
    support_x: np.ndarray, support_y: np.ndarray, alphas: tuple[float, ...] = TIP_ALPHAS,
    betas: tuple[float, ...] = TIP_BETAS, max_folds: int = TIP_MAX_FOLDS, seed: int = 0,
) -> dict[str, float]:
    """(alpha, beta) of Tip-Adapter chosen by cross-validation on the support set only (see the module's
    docstring): support_x (S, d), support_y (S,) labels. Returns alpha, beta and the cross-validated accuracy
    of the pair (None with a class of one item, where the defaults are returned)."""
    from sklearn.model_selection import StratifiedKFold

    support_x = np.asarray(support_x, dtype=np.float64)
    classes, y = np.unique(np.asarray(support_y), return_inverse=True)
    folds = min(max_folds, int(np.bincount(y).min()))
    if folds < 2 or len(classes) < 2:
        return {"alpha": TIP_DEFAULT[0], "beta": TIP_DEFAULT[1], "cv_accuracy": None}
    a = torch.tensor(alphas, dtype=torch.float64)[:, None, None, None]           # (A, 1, 1, 1)
    correct = torch.zeros(len(alphas), len(betas), dtype=torch.float64)
    loss = torch.zeros(len(alphas), len(betas), dtype=torch.float64)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(support_x, y):
        head = torch.from_numpy(_head(support_x[train], y[train], support_x[held], len(classes)))   # (h, C)
        cache = torch.stack([cache_logits(support_x[train], y[train], support_x[held], b, len(classes))
                             for b in betas])                                    # (B, h, C)
        logits = head + a * cache                                                # (A, B, h, C)
        target = torch.from_numpy(y[held])
        correct += (logits.argmax(-1) == target).sum(-1)
        loss -= logits.log_softmax(-1).gather(-1, target.expand(*logits.shape[:-1])[..., None]).squeeze(-1).sum(-1)
    # the most accurate pair; then the lowest cross-entropy; then grid order (the sort is stable)
    order = sorted(np.ndindex(len(alphas), len(betas)), key=lambda ab: (-float(correct[ab]), float(loss[ab])))
    i, j = order[0]
    return {"alpha": float(alphas[i]), "beta": float(betas[j]), "cv_accuracy": float(correct[i, j]) / len(y)}


def tip_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
) -> dict[str, float]:
    """Tip-Adapter on frozen features with the probe signature of ``linear_probe`` (usable with
    ``few_labels``): alpha and beta chosen by :func:`select_tip` on (train_x, train_y) alone, the head fitted
    on all of train_x, test_x classified. The scores, with the chosen alpha and beta."""
    train_x = np.asarray(train_x, dtype=np.float64)
    classes, y = np.unique(np.asarray(train_y), return_inverse=True)
    chosen = select_tip(train_x, train_y)
    head = _head(train_x, y, test_x, len(classes))                             # (M, C)
    logits = tip_adapter_logits(train_x, y, test_x, chosen["alpha"], chosen["beta"], head)
    return {**classification_scores(np.asarray(test_y), classes[logits.argmax(1)]),
            "alpha": chosen["alpha"], "beta": chosen["beta"]}


def _check_draws(train_y: np.ndarray, labels_per_class: int | None, seeds: int, protocol: str) -> None:
    if labels_per_class is None:
        raise SelfmetaError(f"--protocol {protocol} needs --labels-per-class K: it adapts to K labelled items per "
                            "class, drawn --seeds times")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SelfmetaError(f"--seeds must be an integer of at least 1, got {seeds!r}")
    if len(np.unique(train_y)) < 2:
        raise SelfmetaError(f"the {protocol} protocol needs at least 2 classes; the data has {len(np.unique(train_y))}")


def run_tip(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, labels_per_class: int,
    seeds: int = 5,
) -> dict[str, Any]:
    """``tip_probe`` on ``labels_per_class`` items per class drawn ``seeds`` times: ``few_labels``' result."""
    _check_draws(np.asarray(train_y), labels_per_class, seeds, "tip")
    return {"protocol": "tip", **few_labels(tip_probe, train_x, train_y, test_x, test_y, labels_per_class, seeds)}


# ------------------------------------------------------------------------------------------- finetune

class PrototypeHead(nn.Module):
    """A linear head on L2-normalized features, started at the prototype classifier of the support set:
    with c_n the mean normalized feature of class n, w_n = 2 c_n and b_n = -|c_n|^2, whose logits are minus
    the squared distances to the class means up to a constant per item (the nearest mean wins at step 0).
    (Normalized, so that the logits start on the same scale for every encoder.)"""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        z = F.normalize(features.float(), dim=1)                                # (S, F)
        protos = torch.zeros(num_classes, z.shape[1], device=z.device).index_add_(0, labels, z)
        protos /= torch.bincount(labels, minlength=num_classes).clamp_min(1)[:, None].to(z)   # (C, F)
        self.linear = nn.Linear(z.shape[1], num_classes).to(z.device)
        with torch.no_grad():
            self.linear.weight.copy_(2 * protos)
            self.linear.bias.copy_(-protos.pow(2).sum(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) backbone features -> (B, C) logits."""
        return self.linear(F.normalize(features, dim=1))


def check_finetune_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (names of FINETUNE_OPTIONS) with the defaults filled in, checked: one error line each."""
    unknown = sorted(set(options) - set(FINETUNE_OPTIONS))
    if unknown:
        raise SelfmetaError(f"unknown fine-tuning option {unknown[0]!r}; valid: {', '.join(FINETUNE_OPTIONS)}")
    out = {**FINETUNE_DEFAULTS, **options}
    for name in ("steps", "batch_size"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SelfmetaError(f"fine-tuning option {name} must be an integer of at least 1, got {value!r}")
    for name, least in (("lr", None), ("head_lr", None), ("weight_decay", 0.0)):
        value = out[name]
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not ok or (value < least if least is not None else value <= 0):
            rule = "a finite number >= 0" if least is not None else "a finite number > 0"
            raise SelfmetaError(f"fine-tuning option {name} must be {rule}, got {value!r}")
        out[name] = float(value)
    return out


def _features_in_batches(backbone: nn.Module, modality, items: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    return torch.cat([backbone(modality.to_model(items[i : i + batch_size], device))
                      for i in range(0, len(items), batch_size)])


def finetune_backbone(
    backbone: nn.Module, modality, support_items: torch.Tensor, support_y: torch.Tensor | np.ndarray,
    num_classes: int, steps: int = FINETUNE_DEFAULTS["steps"], lr: float = FINETUNE_DEFAULTS["lr"],
    head_lr: float = FINETUNE_DEFAULTS["head_lr"], weight_decay: float = FINETUNE_DEFAULTS["weight_decay"],
    batch_size: int = FINETUNE_DEFAULTS["batch_size"], seed: int = 0, device: str | torch.device = "cpu",
) -> tuple[nn.Module, PrototypeHead]:
    """A fine-tuned copy of ``backbone`` (``Backbone``: ``backbone(x)`` -> (B, F)) and its head
    (:class:`PrototypeHead`), trained jointly on the support set; ``backbone`` itself is left untouched.

    ``modality``: the data's ``spec`` (``spec.to_model`` makes model inputs); ``support_items`` (S, ...) raw
    items (``data.take``); ``support_y`` (S,) classes in [0, num_classes). AdamW, backbone at ``lr``, head at
    ``head_lr``, both with ``weight_decay``; cross-entropy on ``steps`` minibatches of ``batch_size`` items (the
    whole support set where it is smaller), a fresh shuffle of it per pass. The backbone is in train mode
    (dropout active) except its batch-norm layers, kept in eval mode: their running statistics stay the
    pretrained ones and normalize the batch, since statistics of a few items per batch would be noise (their
    affine weights are still trained). Deterministic given ``seed``; the global random state is restored.
    """
    options = check_finetune_options({"steps": steps, "lr": lr, "head_lr": head_lr, "weight_decay": weight_decay,
                                      "batch_size": batch_size})
    labels = torch.as_tensor(np.asarray(support_y) if not isinstance(support_y, torch.Tensor) else support_y).long()
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SelfmetaError(f"fine-tuning needs at least 2 classes, got num_classes={num_classes!r}")
    if len(support_items) == 0 or labels.shape != (len(support_items),):
        raise SelfmetaError(f"fine-tuning needs one label per support item; got {len(support_items)} items and "
                            f"labels of shape {tuple(labels.shape)}")
    if not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise SelfmetaError(f"support labels must be classes in [0, {num_classes}), got {int(labels.min())} .. "
                            f"{int(labels.max())}")
    device = torch.device(device)
    tuned = copy.deepcopy(backbone).to(device)
    tuned.requires_grad_(True)
    labels = labels.to(device)
    n, batch = len(labels), min(options["batch_size"], len(labels))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        order_rng = torch.Generator().manual_seed(seed)
        tuned.eval()
        with torch.no_grad():
            head = PrototypeHead(_features_in_batches(tuned, modality, support_items, device, 256), labels,
                                 num_classes)
        tuned.train()
        for module in tuned.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        optimizer = torch.optim.AdamW([{"params": tuned.parameters(), "lr": options["lr"]},
                                       {"params": head.parameters(), "lr": options["head_lr"]}],
                                      weight_decay=options["weight_decay"])
        order, at = torch.randperm(n, generator=order_rng), 0
        for step in range(options["steps"]):
            if at + batch > n:  # a fresh pass over the support set
                order, at = torch.randperm(n, generator=order_rng), 0
            index = order[at : at + batch]
            at += batch
            x = modality.to_model(support_items[index], device)
            loss = F.cross_entropy(head(tuned(x)), labels[index.to(device)])
            if not torch.isfinite(loss):
                raise SelfmetaError(f"fine-tuning diverged: the loss is {float(loss)} at step {step + 1} (lower lr "
                                    f"or head_lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return tuned.eval(), head.eval()


@torch.no_grad()
def finetune_predict(
    backbone: nn.Module, head: nn.Module, data, batch_size: int = 256, device: str | torch.device = "cpu",
) -> np.ndarray:
    """(N,) head columns (argmax of the logits) of every item of ``data`` (a ``Dataset``), in batches."""
    backbone, head = backbone.to(device).eval(), head.to(device).eval()
    out = [head(backbone(data.spec.to_model(data.take(torch.arange(i, min(i + batch_size, len(data)))), device)))
           .argmax(1).cpu() for i in range(0, len(data), batch_size)]
    return torch.cat(out).numpy()


def finetune_probe(
    backbone: nn.Module, train, test, labels_per_class: int, seeds: int = 5, device: str | torch.device = "cpu",
    **options: Any,
) -> dict[str, float]:
    """Few-shot fine-tuning of the whole backbone: for each seed s < ``seeds``, ``labels_per_class`` items of
    every class of ``train`` drawn as ``few_labels`` draws them (``sample_per_class(y, K, s)``), a copy of
    ``backbone`` fine-tuned on them (:func:`finetune_backbone`, seed s, ``options`` among FINETUNE_OPTIONS),
    every item of ``test`` classified. ``train`` and ``test``: labelled ``Dataset`` splits prepared for the
    backbone (``check_compatible``). ``few_labels``' result: mean scores, accuracy_std, labels_per_class, seeds.
    """
    options = check_finetune_options(options)
    train_y, test_y = train.require_labels().numpy(), test.require_labels().numpy()
    _check_draws(train_y, labels_per_class, seeds, "finetune")
    classes = np.unique(train_y)                                               # head column -> class index
    runs = []
    for seed in range(seeds):
        index = sample_per_class(train_y, labels_per_class, seed)
        support_y = np.searchsorted(classes, train_y[index])
        tuned, head = finetune_backbone(backbone, train.spec, train.take(torch.as_tensor(index)), support_y,
                                        len(classes), seed=seed, device=device, **options)
        runs.append(classification_scores(test_y, classes[finetune_predict(tuned, head, test, device=device)]))
    out = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    out["accuracy_std"] = float(np.std([r["accuracy"] for r in runs]))
    out["labels_per_class"] = labels_per_class
    out["seeds"] = seeds
    return out
