"""``python -m benchmarks.odesuite [--quick] [--budget 60] [--systems ...] [--out DIR]`` (from the repository root)."""

from benchmarks.odesuite.run import main

if __name__ == "__main__":
    main()
