"""``python -m benchmarks.solver [--quick] [--systems lotka,vdp] [--train-seconds 60] [--out DIR]`` (from the repository root)."""

from benchmarks.solver.run import main

if __name__ == "__main__":
    main()
