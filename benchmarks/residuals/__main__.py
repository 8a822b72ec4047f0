"""``python -m benchmarks.residuals [--quick] [--problems ...] [--families ...] [--out DIR]``."""

from benchmarks.residuals.run import main

if __name__ == "__main__":
    main()
