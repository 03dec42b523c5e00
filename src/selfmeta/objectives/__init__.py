"""Objectives: the losses as pure functions of embeddings (no process groups, no devices inside)."""

from selfmeta.objectives.ntxent import nt_xent

__all__ = ["nt_xent"]
