"""Entry point of the residual-scheme benchmark: ``python benchmarks/schemes.py [--quick] [--device cpu|cuda] [--out DIR]``.

The same as ``odedistill bench schemes``; the work is done by ``odedistill.bench.schemes``.
"""

from __future__ import annotations

import sys

from odedistill.cli import main

if __name__ == "__main__":
    main(["bench", "schemes", *sys.argv[1:]])
