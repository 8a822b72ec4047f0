"""``python -m benchmarks.flowmap [--quick] [--systems ...] [--out DIR]`` (from the repository root)."""

from benchmarks.flowmap.run import main

if __name__ == "__main__":
    main()
