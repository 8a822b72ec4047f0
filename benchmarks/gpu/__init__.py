"""The GPU path proven in one prepared run (``python -m benchmarks.gpu``; see benchmarks/README.md).

Five parts, each in its own process under a wall-time cap, 8 minutes in all on one GPU:
training throughput against the official PID code (fp32, bf16, torch.compile, peak memory),
model FLOP utilisation, the residual schemes and the flow map, a one-GPU torchrun killed and
resumed (bit identity) then sampled, and FID throughput. ``--dry-run`` runs every step on the
CPU at toy sizes.
"""
