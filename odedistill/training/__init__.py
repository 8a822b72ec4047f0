"""Training: recipes, the PID loop, checkpoints, EMAs, data parallelism and mixed precision."""
