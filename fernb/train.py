"""``python -m fernb.train <preset> [key=value ...]``: the training entry point torchrun launches.

    torchrun --nproc_per_node 2 -m fernb.train resnet18/ferplus data.root=../shared/data/ferplus

Each process joins the process group torchrun describes (gloo on CPU, NCCL on CUDA); rank 0 writes the run folder.
The arguments are those of ``python -m fernb train`` (see ``--help``).
"""

from __future__ import annotations

import sys

from .engine.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
