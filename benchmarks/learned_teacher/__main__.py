"""``python -m benchmarks.learned_teacher [train | detector] [--quick] [--out DIR]`` (from the repository root)."""

from benchmarks.learned_teacher.run import main

if __name__ == "__main__":
    main()
