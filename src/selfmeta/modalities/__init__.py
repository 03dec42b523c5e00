"""Modalities: one contract (``Modality``), one registry (``MODALITIES``), one module per kind of data."""

from selfmeta.modalities.base import MODALITIES, VIEW_ARGS, Modality, Preprocessor, Views, get_modality
# Importing the modules registers the built-in modalities.
from selfmeta.modalities import image, interactions, record, series, table, text  # noqa: F401, E402

__all__ = ["MODALITIES", "VIEW_ARGS", "Modality", "Preprocessor", "Views", "get_modality"]
