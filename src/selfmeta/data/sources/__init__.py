"""Built-in data sources; importing this package registers them in ``SOURCES``."""

from selfmeta.data.sources import (  # noqa: F401
    cifar, digits, idx, imagefolder, interactions, omniglot, series, table, text,
)
