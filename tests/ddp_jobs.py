"""Run several ``selfmeta`` commands in one pair of torchrun processes (tests/test_ddp.py).

Starting two processes, importing torch and joining a gloo group takes most of a short DDP test's time;
here the group is joined once, and each command (``sys.argv[1]``: a JSON list of argument lists) trains
in it, as ``train`` does when the group exists already (``distributed.init_from_env`` leaves it alone).
A command's failure stops the rest: its exit status is this script's.
"""

import json
import sys

import torch

from selfmeta import distributed
from selfmeta.cli import main

distributed.init_from_env(torch.device("cpu"))
try:
    for argv in json.loads(sys.argv[1]):
        status = main(argv)
        if status:
            sys.exit(status)
finally:
    distributed.shutdown()
