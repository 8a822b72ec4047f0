"""The ``[eval]`` section of a recipe: the end-of-run evaluation and FID."""

from __future__ import annotations

from dataclasses import dataclass

from odedistill.fields import _f


@dataclass
class EvalConfig:
    enabled: bool = _f(True, "evaluate after training: eval.json and samples.png")
    n_heldout: int = _f(1000, "held-out initial states for trajectory errors", lo=1, hi=10**6)
    seed: int = _f(12345, "seed of the held-out states and fresh data", lo=0, hi=2**32 - 1)
    nfe: list[int] = _f(
        [1, 2, 4, 8],
        "evaluation budgets of the Euler and Heun baselines",
        item=dict(lo=1, hi=10_000),
    )
    ema: float = _f(
        -1.0, "EMA rate whose weights are 'student' (-1 = the first rate, 0 = raw)", lo=-1, hi=1
    )
    reference: str = _f(
        "scipy",
        "where the systems without a closed form get their 'exact' endpoints: 'scipy' (DOP853, "
        "rtol = atol = 1e-10) or 'heun' (the teacher's Heun through the collocation grid; for "
        "network teachers, whose float32 output and timestep table put 1e-10 out of reach)",
        choices=("scipy", "heun"),
    )
    trajectories: int = _f(8, "student trajectories drawn in samples.png", lo=0, hi=1000)
    grid_size: int = _f(8, "images: rows and columns of the sample grids", lo=1, hi=64)
    fid_every: int = _f(
        0,
        "FID of the checkpoint every K iterations (0 = off; a multiple of checkpoint_every)",
        lo=0,
    )
    fid_ref: str = _f("", "FID during training: reference statistics .npz (mu, sigma)")
    fid_detector: str = _f("", "FID during training: the TorchScript Inception detector file")
    fid_num: int = _f(
        10000, "FID during training: images from seeds 0 .. fid_num - 1", lo=2, hi=10**7
    )
    fid_weights: str = _f("all", "FID during training: 'all', 'ema', 'raw' or a rate")
    fid_end: bool = _f(
        False,
        "after training: FID (with eval.fid_ref, fid_detector, fid_num) of the student (a flow "
        "map at 1 and student.steps steps) and of the teacher's Euler and Heun at eval.fid_nfe "
        "evaluations, into eval.json's 'fid' section and fid_vs_nfe.png",
    )
    fid_nfe: list[int] = _f(
        [1, 2, 4, 8, 16, 35],
        "eval.fid_end: the teacher's numbers of evaluations (Heun at an odd number ends with an "
        "Euler step, as EDM's sampler)",
        item=dict(lo=1, hi=10_000),
        max_len=64,
    )
    fid_floor_ref: str = _f(
        "",
        "eval.fid_end: statistics of a second sample of the data; their FID against "
        "eval.fid_ref is reported as the data-against-data floor ('' = none)",
    )
