"""``python -m benchmarks.schemes [--quick] [--device cpu|cuda] [--out DIR]`` (from the repository root)."""

from benchmarks.schemes.run import main

if __name__ == "__main__":
    main()
