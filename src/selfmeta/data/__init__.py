"""Data: sources (one registry), the in-memory Dataset, views (augmentations), downloaders."""

from selfmeta.data.dataset import Dataset, fixed_split
from selfmeta.data.source import SOURCES, load_data
from selfmeta.data import sources  # noqa: F401  (registers the built-in sources)

__all__ = ["SOURCES", "Dataset", "fixed_split", "load_data"]
