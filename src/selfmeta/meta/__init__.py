"""Meta-learners: one contract (``MetaLearner``), one registry (``METALEARNERS``)."""

from selfmeta.meta.base import METALEARNERS, MetaLearner, batch_statistics, query_accuracy

# Importing the modules registers the built-in meta-learners.
from selfmeta.meta import maml, metric, protonet, psco, reptile  # noqa: F401, E402
from selfmeta.meta import memory  # noqa: F401, E402
from selfmeta.meta import lstm  # noqa: F401, E402
from selfmeta.meta import generated  # noqa: F401, E402
from selfmeta.meta import metacluster  # noqa: F401, E402

__all__ = ["METALEARNERS", "MetaLearner", "batch_statistics", "query_accuracy"]
