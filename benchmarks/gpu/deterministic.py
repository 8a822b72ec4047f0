"""``odedistill``'s command line under PyTorch's deterministic algorithms (for bit-identity checks).

    CUBLAS_WORKSPACE_CONFIG=:4096:8 torchrun --standalone --nproc_per_node 1 \\
        -m benchmarks.gpu.deterministic run recipes/pid_cifar10.toml --set ...

``torch.use_deterministic_algorithms(True, warn_only=True)``: an operation with no deterministic
implementation warns (the warning names it) instead of stopping the run; cuDNN's autotuner is off.
"""

from __future__ import annotations

import os
import sys

import torch


def main() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    from odedistill import cli_main as cli

    cli(sys.argv[1:])


if __name__ == "__main__":
    main()
