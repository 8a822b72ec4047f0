"""Sampling by seed: students in one or more steps, EDM teachers, written as PNG folders, .npz or pictures."""
