"""Objectives: the losses (and the clustering maths behind pseudo-labels) as pure functions of tensors.

No process groups, devices or modules' state inside: methods gather across ranks and call these.
"""

from selfmeta.objectives.balanced import balanced_cross_entropy
from selfmeta.objectives.barlow import barlow_twins_loss, cross_correlation
from selfmeta.objectives.byol import byol_loss, normalized_mse
from selfmeta.objectives.clip import clip_loss
from selfmeta.objectives.dec import balance_kl, dec_loss, soft_assignment, target_distribution
from selfmeta.objectives.infonce import info_nce
from selfmeta.objectives.kmeans import KMeansResult, kmeans, pca_whiten
from selfmeta.objectives.metric import (
    batch_hard_miner,
    contrastive_loss,
    semi_hard_miner,
    triplet_loss,
)
from selfmeta.objectives.ntxent import nt_xent
from selfmeta.objectives.reconstruction import masked_mse
from selfmeta.objectives.sinkhorn import sinkhorn
from selfmeta.objectives.ts2vec import (
    hierarchical_contrastive_loss,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)
from selfmeta.objectives.vicreg import vicreg_loss, vicreg_terms

__all__ = [
    "KMeansResult", "balance_kl", "balanced_cross_entropy", "barlow_twins_loss", "batch_hard_miner", "byol_loss",
    "clip_loss", "contrastive_loss", "cross_correlation", "dec_loss", "hierarchical_contrastive_loss", "info_nce",
    "instance_contrastive_loss", "kmeans", "masked_mse", "normalized_mse",
    "nt_xent", "pca_whiten", "semi_hard_miner", "sinkhorn", "soft_assignment", "target_distribution",
    "temporal_contrastive_loss", "triplet_loss", "vicreg_loss", "vicreg_terms",
]
