"""Methods: one contract (``Method``), one registry (``METHODS``)."""

from selfmeta.methods.base import METHODS, Method, StepOutput, method_options
from selfmeta.methods import simclr  # noqa: F401  (registers the built-in methods)

__all__ = ["METHODS", "Method", "StepOutput", "method_options"]
