"""``python -m benchmarks.gpu``: see benchmarks/gpu/run.py."""

from benchmarks.gpu.run import main

if __name__ == "__main__":
    main()
