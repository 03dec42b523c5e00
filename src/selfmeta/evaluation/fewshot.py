"""Few-shot evaluation: episodes from held-out classes, one protocol for every model.

Episodes are drawn once with a fixed seed (:func:`fewshot_episodes`), so every model is scored on the same
tasks. For a frozen encoder every item is embedded once; the episodes are then solved as batched tensor
operations over (E, N, K+Q, F) feature blocks, never one episode at a time:

- ``prototype``: nearest class mean, squared Euclidean distance (Snell et al. 2017);
- ``cosine``: nearest class mean of the L2-normalized support features by cosine similarity, the
  geometry that contrastive objectives (SimCLR, PsCo, cosine ProtoNets) train;
- ``logreg``: multinomial logistic regression on the L2-normalized support features, scikit-learn's
  objective (C=1) solved for all episodes at once with L-BFGS (Tian et al. 2020's few-shot baseline);
- ``finetune``: a linear head initialized at the prototype classifier and fine-tuned by gradient steps on
  the support features. (A meta-learner's own adaptation, e.g. MAML's inner loop, runs on raw items:
  see :func:`learner_episode_accuracy`.)

Accuracy is reported as the mean over episodes with a 95% confidence interval (1.96 standard errors).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from selfmeta.data.episodes import EpisodeSampler, EpisodeSpec
from selfmeta.errors import SelfmetaError

ADAPTATIONS = ("prototype", "cosine", "logreg", "finetune")
EVAL_SEED = 2024      # the episodes of every few-shot evaluation; fixed, never tuned
CHUNK = 250           # episodes solved together (bounds memory: CHUNK * N * (K+Q) * F floats)


def fewshot_episodes(labels: torch.Tensor, spec: EpisodeSpec, episodes: int, seed: int = EVAL_SEED) -> torch.Tensor:
    """(E, N, K+Q) item indices of ``episodes`` test episodes, a pure function of (labels, spec, seed)."""
    if episodes < 1:
        raise SelfmetaError(f"episodes must be at least 1, got {episodes}")
    return EpisodeSampler(labels, spec).sample(episodes, torch.Generator().manual_seed(seed))


def summarize(accuracy: torch.Tensor) -> dict[str, float]:
    """(E,) per-episode accuracies -> mean and the half-width of its 95% confidence interval."""
    e = accuracy.numel()
    std = float(accuracy.double().std()) if e > 1 else 0.0
    return {"accuracy": float(accuracy.double().mean()), "ci95": 1.96 * std / math.sqrt(e)}


def _blocks(features: torch.Tensor, episodes: torch.Tensor, shots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """features (M, F), episodes (E, N, K+Q) -> support (E, N, K, F), query (E, N*Q, F)."""
    block = features[episodes]                                              # (E, N, K+Q, F)
    e, n, _, f = block.shape
    return block[:, :, :shots], block[:, :, shots:].reshape(e, -1, f)


def _query_labels(e: int, n: int, q: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device).repeat_interleave(q).expand(e, -1)  # (E, N*Q)


def prototype_logits(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """support (E, N, K, F), query (E, Q, F) -> (E, Q, N) minus squared distances to the class means."""
    protos = support.mean(2)                                                # (E, N, F)
    return -torch.cdist(query, protos).pow(2)


def cosine_logits(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """support (E, N, K, F), query (E, Q, F) -> (E, Q, N) cosine similarities to the means of the
    normalized support features."""
    protos = F.normalize(support, dim=-1).mean(2)                           # (E, N, F)
    return F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)


def logreg_logits(support: torch.Tensor, query: torch.Tensor, C: float = 1.0, max_iter: int = 100) -> torch.Tensor:
    """Multinomial logistic regression per episode, minimizing scikit-learn's objective

        C * sum_i CE(W f_i + b, y_i) + 1/2 ||W||^2      (bias not penalized)

    on L2-normalized features. The episodes' problems are independent, so their objectives are summed and
    solved together by one L-BFGS (the sum's minimizer is every episode's minimizer).
    """
    support, query = F.normalize(support.double(), dim=-1), F.normalize(query.double(), dim=-1)
    e, n, k, f = support.shape
    x = support.reshape(e, n * k, f)                                        # (E, NK, F)
    y = torch.arange(n, device=x.device).repeat_interleave(k)               # (NK,)
    w = torch.zeros(e, f, n, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(e, 1, n, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b                                                  # (E, NK, N)
        ce = F.cross_entropy(logits.reshape(-1, n), y.repeat(e), reduction="sum")
        loss = C * ce + 0.5 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (query @ w + b).float()


def finetune_logits(support: torch.Tensor, query: torch.Tensor, steps: int = 100, lr: float = 0.01) -> torch.Tensor:
    """A linear head per episode, started at the prototype classifier (w_n = 2 c_n, b_n = -|c_n|^2, whose
    logits differ from minus the squared distances by a per-query constant) and fine-tuned with Adam on
    the support cross-entropy, all episodes at once."""
    support, query = support.float(), query.float()
    e, n, k, f = support.shape
    protos = support.mean(2)                                                # (E, N, F)
    w = (2 * protos).transpose(1, 2).clone().requires_grad_(True)           # (E, F, N)
    b = (-protos.pow(2).sum(-1)).unsqueeze(1).clone().requires_grad_(True)  # (E, 1, N)
    x = support.reshape(e, n * k, f)
    y = torch.arange(n, device=x.device).repeat_interleave(k).repeat(e)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        # Sum over episodes of each episode's mean loss: every episode's gradient is its own.
        loss = F.cross_entropy((x @ w + b).reshape(-1, n), y, reduction="sum") / (n * k)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return query @ w + b


SOLVERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "prototype": prototype_logits, "cosine": cosine_logits, "logreg": logreg_logits, "finetune": finetune_logits,
}


def episode_accuracy(features: torch.Tensor, episodes: torch.Tensor, shots: int, adapt: str = "prototype") -> torch.Tensor:
    """Frozen features (M, F) of the evaluation items, episodes (E, N, K+Q) -> (E,) query accuracies."""
    if adapt not in SOLVERS:
        raise SelfmetaError(f"unknown adaptation {adapt!r}; valid: {', '.join(ADAPTATIONS)}")
    out = []
    for chunk in episodes.split(CHUNK):
        support, query = _blocks(features, chunk, shots)
        logits = SOLVERS[adapt](support, query)                             # (e, N*Q, N)
        labels = _query_labels(*chunk.shape[:2], chunk.shape[2] - shots, logits.device)
        out.append((logits.argmax(-1) == labels).float().mean(-1))
    return torch.cat(out)


def learner_episode_accuracy(
    adapt_predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    items: Callable[[torch.Tensor], torch.Tensor],
    episodes: torch.Tensor,
    shots: int,
    chunk: int = 50,
) -> torch.Tensor:
    """A meta-learner's own adaptation (``MetaLearner.adapt_predict``) on raw items, ``chunk`` episodes at a
    time. ``items(index)`` gives the model-ready items (``to_unit``, on the device) of an index tensor."""
    out = []
    for block in episodes.split(chunk):
        e, n, kq = block.shape
        x = items(block.flatten())                                          # (e*N*(K+Q), ...)
        x = x.reshape(e, n, kq, *x.shape[1:])
        support = x[:, :, :shots].flatten(1, 2)
        query = x[:, :, shots:].flatten(1, 2)
        support_y = torch.arange(n, device=x.device).repeat_interleave(shots)
        logits = adapt_predict(support, support_y, query)                  # (e, N*Q, N)
        labels = _query_labels(e, n, kq - shots, logits.device)
        out.append((logits.argmax(-1) == labels).float().mean(-1).cpu())
    return torch.cat(out)
