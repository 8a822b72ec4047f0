"""Run infrastructure: config and recipes, registries, building a session, checkpoints, students,
devices, processes, precision, EMAs, noise and seeds, progress bars and pictures."""
