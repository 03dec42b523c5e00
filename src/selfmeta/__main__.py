"""``python -m selfmeta`` (and ``torchrun -m selfmeta``) runs the CLI."""

import sys

from selfmeta.cli import main

sys.exit(main())
