"""Training: the PID trainer, its objective, metrics and sample grids."""
