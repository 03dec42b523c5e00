"""Built-in data sources; importing this package registers them in ``SOURCES``."""

from selfmeta.data.sources import cifar, digits, idx, imagefolder, omniglot, series, table, text  # noqa: F401
