"""Methods: one contract (``Method``), one registry (``METHODS``)."""

from selfmeta.methods.base import BUILT_BY_ENGINE, METHODS, Method, StepOutput
# Importing the modules registers the built-in methods.
from selfmeta.methods import (  # noqa: F401
    barlow, byol, coldstart, contrastive, crossmodal, dec, deepcluster, maskedcolumns, moco, reconstruction, rotation, sasrec,
    sela, simclr, triplet, ts2vec, vicreg,
)

__all__ = ["BUILT_BY_ENGINE", "METHODS", "Method", "StepOutput"]
