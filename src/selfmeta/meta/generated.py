"""Meta-learners that generate a task's classifier from its support set.

- ``hypernet``: an amortized head in the style of VERSA (Gordon, Bronskill, Bauer, Nowozin & Turner,
  Meta-Learning Probabilistic Inference for Prediction, ICLR 2019). A small network maps each class's mean
  support feature to a Gaussian over that class's weight vector and bias; the loss is minus the log of the
  Monte Carlo predictive (the mean over weight draws of the query's softmax probability).
- ``leo``: Latent Embedding Optimization (Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero & Hadsell,
  Meta-Learning with Latent Embedding Optimization, ICLR 2019). An encoder and a relation network give a
  Gaussian latent code per class, a decoder turns a code into the class's weights; the task adapts by
  gradient steps on the low-dimensional codes, then a few on the weights themselves, all differentiated
  through by the outer loss.

Both work on the backbone's features (F) and generate each class's weights from the support items (of
that class, and for LEO its relations to the rest of the support), never from a learned per-way head: one
model serves any number of ways. Everything is batched over the T tasks of a meta-batch, as (T, N, ...)
tensors: no loop over tasks or items. The heads compute in float32 (or the parameters' dtype) with
autocast off, as ProtoNet does, whatever precision the backbone ran in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.meta.base import METALEARNERS, MetaLearner, query_accuracy
from selfmeta.meta.protonet import prototypes
from selfmeta.methods.base import StepOutput
from selfmeta.modalities.base import Views
from selfmeta.options import Option


def episode_features(backbone: Backbone, support: torch.Tensor, query: torch.Tensor,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """support (T, S, ...), query (T, Q, ...) -> features (T, S, F), (T, Q, F) in ``dtype``. One backbone
    call for both, so batch norm normalizes the whole meta-batch with one set of statistics (as ProtoNet)."""
    t = support.shape[0]
    feats = backbone(torch.cat([support.flatten(0, 1), query.flatten(0, 1)])).to(dtype)       # (T*(S+Q), F)
    s_feat, q_feat = feats.split([support.shape[0] * support.shape[1], query.shape[0] * query.shape[1]])
    return s_feat.reshape(t, -1, feats.shape[1]), q_feat.reshape(t, -1, feats.shape[1])


# --- VERSA-style amortized head ----------------------------------------------------------------------------------

@METALEARNERS.register("hypernet")
class HyperNet(MetaLearner):
    """Amortized inference of the classifier (VERSA): per class, the mean support feature goes through a
    small MLP that outputs the mean and log-variance of the class's weight vector (F) and bias. The loss
    draws ``samples`` weights per class (reparameterized) and is VERSA's: minus the log of the mean over
    draws of the query's softmax probability, averaged over queries and tasks.

    ``adapt_predict`` returns the same predictive (log of the Monte Carlo mean of the softmax, a valid set
    of logits): it is the quantity trained, and unlike the mean weights it accounts for each class's weight
    uncertainty (an uncertain class gets a flatter vote). It is random: ``selfmeta evaluate`` seeds it, so an
    evaluation repeats.

    Args:
        samples: weight draws L per class and task (VERSA trains with 10).
        hidden: width of the generator's two hidden layers (default: the feature size F).
    """

    description = "VERSA-style hypernetwork: per-class Gaussian weights from the class's mean feature"
    paper = ("Gordon, Bronskill, Bauer, Nowozin & Turner, Meta-Learning Probabilistic Inference for Prediction, "
             "ICLR 2019")
    options = {
        "samples": Option("weight draws per class for the Monte Carlo predictive (VERSA: 10)", ge=1),
        "hidden": Option("width of the generator's hidden layers; null: the feature size", ge=1),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, samples: int = 10,
                 hidden: int | None = None) -> None:
        super().__init__(backbone, views, spec)
        self.samples = samples
        f = backbone.num_features
        width = hidden or f
        # F -> 2(F+1): the mean and the log-variance of [weights, bias]. ELU as VERSA's amortization network.
        self.generator = nn.Sequential(nn.Linear(f, width), nn.ELU(), nn.Linear(width, width), nn.ELU(),
                                       nn.Linear(width, 2 * (f + 1)))
        with torch.no_grad():
            # Start the weights' variance at 1/F (a fan-in scale): the sampled logits' noise is then of the
            # order of one feature, whatever F; at log-variance 0 it would grow with sqrt(F).
            self.generator[-1].bias[f + 1:].fill_(-math.log(f))

    def log_predictive(self, s_feat: torch.Tensor, support_y: torch.Tensor, q_feat: torch.Tensor,
                       ways: int) -> torch.Tensor:
        """(T, S, F) support and (T, Q, F) query features -> (T, Q, N) log of the Monte Carlo predictive."""
        mean, logvar = self.generator(prototypes(s_feat, support_y, ways)).chunk(2, -1)     # (T, N, F+1) each
        t, n, d = mean.shape
        noise = torch.randn(t, self.samples, n, d, dtype=mean.dtype, device=mean.device)    # (T, L, N, F+1)
        draws = mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * noise           # reparameterized
        logits = torch.einsum("tqf,tlnf->tlqn", q_feat, draws[..., :-1]) + draws[..., -1].unsqueeze(2)  # (T, L, Q, N)
        # log (1/L) sum_l softmax_l, in log space for stability
        return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(self.samples)

    def _predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        dtype = self.generator[0].weight.dtype
        s_feat, q_feat = episode_features(self.backbone, support, query, dtype)
        with torch.autocast(support.device.type, enabled=False):
            return self.log_predictive(s_feat, support_y, q_feat, ways)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)
        support_y, query_y = self.spec.labels(x.device)
        log_p = self._predict(support, support_y, query, self.spec.ways)                     # (T, NQ, N)
        with torch.autocast(x.device.type, enabled=False):
            loss = F.nll_loss(log_p.flatten(0, 1), query_y.repeat(log_p.shape[0]))
        return StepOutput(loss, {"accuracy": float(query_accuracy(log_p.detach(), query_y).mean())})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self._predict(support, support_y, query, int(support_y.max()) + 1)


# --- LEO -----------------------------------------------------------------------------------------------------------

def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) in closed form, averaged over all entries (the official code averages
    a one-sample estimate the same way; the closed form has no sampling noise)."""
    return (0.5 * (mean ** 2 + std ** 2 - 1) - torch.log(std)).mean()


def orthogonality_penalty(rows: torch.Tensor) -> torch.Tensor:
    """(R, D) -> mean over entries of (C - I)^2, C the (R, R) correlation (cosine) matrix of the rows: 0
    exactly when the rows are orthogonal. The paper's ||C - I||^2, averaged as its official code does."""
    unit = F.normalize(rows, dim=1)
    return ((unit @ unit.T - torch.eye(len(rows), dtype=rows.dtype, device=rows.device)) ** 2).mean()


def task_cross_entropy(feats: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(T, B, F) features, (T, N, F) class weights, (B,) labels -> (T,) mean cross-entropy of each task."""
    logits = feats @ weights.transpose(1, 2)                                                 # (T, B, N)
    return F.cross_entropy(logits.transpose(1, 2), labels.expand(len(feats), -1), reduction="none").mean(1)


@METALEARNERS.register("leo")
class LEO(MetaLearner):
    """Latent Embedding Optimization. On the backbone's features (F): a linear encoder (F -> Z) per
    support item; a relation network over every ordered pair of encoded support items of the task, averaged
    over the pairs whose first item is of class n, gives the mean and std of class n's latent code; a
    decoder maps a code (Z) to the mean and std of the class's weight vector (F), sampled in training, the
    mean in evaluation. Adaptation: ``inner_steps`` gradient steps on the support cross-entropy with respect
    to the codes (learned step size), decoding after each; then ``finetune_steps`` steps on the decoded
    weights (learned step size). The outer loss differentiates through both loops (second order), so the
    encoder, relation network and decoder learn through the latent inner loop:

        query CE + kl_weight * KL(q(z | support) || N(0, I)) + encoder_penalty * |stopgrad(z') - z|^2
                 + orthogonality * mean (C - I)^2 over the decoder's Z rows (one per latent direction).

    Departures from the paper: the backbone is meta-trained jointly (through the query features and
    through the support features that make the codes); the paper froze features pretrained by supervised
    classification. No dropout on the features and no L2 term (use the optimizer's weight decay).

    Defaults: the official code's miniImageNet configuration (LEO reports no Omniglot) except the latent size:
    64 codes for the paper's 640 WRN features, scaled to 16 for the 64-feature Conv-4 backbones of
    Omniglot-sized work. Latent steps 5 at 1.0, weight steps 5 at 0.001, KL 1e-3, encoder penalty 1e-9,
    orthogonality 1e-3.

    Args:
        latent: size Z of a class's latent code; at most 2F (the decoder's Z rows of length 2F can only be
            orthonormal then).
        inner_steps, inner_lr: gradient steps on the latent codes, and their step size's initial value.
        finetune_steps, finetune_lr: gradient steps on the generated weights, and their step size's initial value.
        kl_weight, encoder_penalty, orthogonality: the weights beta, gamma and lambda of the regularizers.
    """

    description = "LEO: class weights decoded from latent codes adapted by gradient steps in latent space"
    paper = ("Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero & Hadsell, Meta-Learning with Latent Embedding "
             "Optimization, ICLR 2019")
    # LEO's code clips the meta-gradient's norm at 0.1: without it a UMTRA run on Omniglot diverged after
    # 3,500 steps (in-episode accuracy 0.88 -> 0.47, benchmarks in BENCHMARKS.md).
    defaults = {"grad_clip": 0.1}
    options = {
        "latent": Option("size Z of the class latent codes, at most 2x the feature size (LEO: 64 for 640 features)", ge=1),
        "inner_steps": Option("gradient steps on the latent codes (LEO's code: 5)", ge=0),
        "inner_lr": Option("initial value of the learned latent step size (LEO's code: 1.0)", gt=0),
        "finetune_steps": Option("gradient steps on the decoded weights after the latent ones (LEO's code: 5)", ge=0),
        "finetune_lr": Option("initial value of the learned weight step size (LEO's code: 0.001)", gt=0),
        "kl_weight": Option("beta, weight of KL(q(z | support) || N(0, I)) (LEO's code: 0.001)", ge=0),
        "encoder_penalty": Option("gamma, weight of |stopgrad(adapted z) - initial z|^2 (LEO's code: 1e-9)", ge=0),
        "orthogonality": Option("lambda, weight of the decoder's orthogonality penalty (LEO's code: 0.001)", ge=0),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, latent: int = 16, inner_steps: int = 5,
                 inner_lr: float = 1.0, finetune_steps: int = 5, finetune_lr: float = 0.001, kl_weight: float = 0.001,
                 encoder_penalty: float = 1e-9, orthogonality: float = 0.001) -> None:
        super().__init__(backbone, views, spec)
        f = backbone.num_features
        if not 1 <= latent <= 2 * f:  # the Option checks >= 1 for configs; the API and the bound on F land here
            raise SelfmetaError(f"leo: latent must be between 1 and 2 x the {f} features, got {latent}")
        self.inner_steps, self.finetune_steps = inner_steps, finetune_steps
        self.kl_weight, self.encoder_penalty, self.orthogonality = float(kl_weight), float(encoder_penalty), float(orthogonality)
        self.encoder = nn.Linear(f, latent)
        # Pair (item i, item j) -> 2Z: three layers of 2Z with ReLU, as the official relation network.
        self.relation = nn.Sequential(nn.Linear(2 * latent, 2 * latent), nn.ReLU(), nn.Linear(2 * latent, 2 * latent),
                                      nn.ReLU(), nn.Linear(2 * latent, 2 * latent))
        self.decoder = nn.Linear(latent, 2 * f, bias=False)  # Z -> mean and raw std of the weights; its weight
        self.inner_lr = nn.Parameter(torch.tensor(float(inner_lr)))        # is what the penalty keeps orthogonal
        self.finetune_lr = nn.Parameter(torch.tensor(float(finetune_lr)))
        # The weights' std is softplus(raw) / sqrt(F): at init the sampled logits' noise is of the order of one
        # feature whatever F (the official code offsets its std for the same reason).
        self.weight_scale = f ** -0.5

    def latent_distribution(self, s_feat: torch.Tensor, support_y: torch.Tensor,
                            ways: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, S, F) support features -> mean and std (T, N, Z) of each class's latent code."""
        e = self.encoder(s_feat)                                                             # (T, S, Z)
        s = e.shape[1]
        pairs = torch.cat([e.unsqueeze(2).expand(-1, -1, s, -1), e.unsqueeze(1).expand(-1, s, -1, -1)], -1)  # (T, S, S, 2Z)
        # The paper's 1/(N K^2) sum over pairs (class-n item, any item): the mean over the second item, then
        # the class mean over the first (prototypes also takes unequal shots).
        mean, raw = prototypes(self.relation(pairs).mean(2), support_y, ways).chunk(2, -1)    # (T, N, Z) each
        return mean, F.softplus(raw)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(T, N, Z) latent codes -> (T, N, F) class weights: a reparameterized draw in training, the mean in eval."""
        mean, raw = self.decoder(z).chunk(2, -1)                                             # (T, N, F) each
        if not self.training:
            return mean
        return mean + F.softplus(raw) * self.weight_scale * torch.randn_like(mean)

    def adapt(self, s_feat: torch.Tensor, support_y: torch.Tensor, ways: int,
              create_graph: bool) -> tuple[torch.Tensor, ...]:
        """(T, S, F) support features -> the adapted weights (T, N, F), the initial and latent-adapted codes
        (T, N, Z), and the mean and std (T, N, Z) of q(z | support). The tasks are independent, so the
        gradient of the sum of their losses is each task's own gradient: one autograd call per step for all."""
        mean, std = self.latent_distribution(s_feat, support_y, ways)
        z_init = mean + std * torch.randn_like(std) if self.training else mean
        # Without create_graph (adaptation, or a loss under no_grad) the codes restart from a leaf: nothing
        # above them needs gradients. The loops take gradients even where the caller disabled them.
        z = z_init if create_graph else z_init.detach().requires_grad_()
        with torch.enable_grad():
            weights = self.decode(z)
            for _ in range(self.inner_steps):
                loss = task_cross_entropy(s_feat, weights, support_y).sum()
                z = z - self.inner_lr * torch.autograd.grad(loss, z, create_graph=create_graph)[0]
                weights = self.decode(z)
            for _ in range(self.finetune_steps):
                loss = task_cross_entropy(s_feat, weights, support_y).sum()
                weights = weights - self.finetune_lr * torch.autograd.grad(loss, weights, create_graph=create_graph)[0]
        return weights, z_init, z, mean, std

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)
        support_y, query_y = self.spec.labels(x.device)
        s_feat, q_feat = episode_features(self.backbone, support, query, self.decoder.weight.dtype)
        with torch.autocast(x.device.type, enabled=False):
            weights, z_init, z, mean, std = self.adapt(s_feat, support_y, self.spec.ways, torch.is_grad_enabled())
            logits = q_feat @ weights.transpose(1, 2)                                        # (T, NQ, N)
            ce = F.cross_entropy(logits.flatten(0, 1), query_y.repeat(logits.shape[0]))
            kl = gaussian_kl(mean, std)
            # The encoder is pulled towards the codes adaptation found; the codes themselves are not moved.
            drift = ((z.detach() - z_init) ** 2).mean()
            # The decoder's weight is (2F, Z): its Z columns are the paper's rows, one per latent direction.
            orth = orthogonality_penalty(self.decoder.weight.T)
            loss = ce + self.kl_weight * kl + self.encoder_penalty * drift + self.orthogonality * orth
        return StepOutput(loss, {"accuracy": float(query_accuracy(logits.detach(), query_y).mean()),
                                 "kl": float(kl.detach())})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        s_feat, q_feat = episode_features(self.backbone, support, query, self.decoder.weight.dtype)
        with torch.autocast(support.device.type, enabled=False):
            weights = self.adapt(s_feat, support_y, int(support_y.max()) + 1, create_graph=False)[0]
            return (q_feat @ weights.transpose(1, 2)).detach()
