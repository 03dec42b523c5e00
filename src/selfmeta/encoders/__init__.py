"""Encoders: one contract (``Encoder``), one registry (``ENCODERS``)."""

from selfmeta.encoders.base import ENCODERS, Backbone, Encoder, Normalize, build_encoder, to_unit
from selfmeta.encoders import models, record, sequence, series, text  # noqa: F401  (registers the built-in encoders)

__all__ = ["ENCODERS", "Backbone", "Encoder", "Normalize", "build_encoder", "to_unit"]
