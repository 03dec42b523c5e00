"""Methods: one contract (``Method``), one registry (``METHODS``)."""

from selfmeta.methods.base import METHODS, Method, StepOutput, method_options
# Importing the modules registers the built-in methods.
from selfmeta.methods import (  # noqa: F401
    barlow, byol, contrastive, dec, deepcluster, moco, reconstruction, rotation, sela, simclr, triplet, vicreg,
)

__all__ = ["METHODS", "Method", "StepOutput", "method_options"]
