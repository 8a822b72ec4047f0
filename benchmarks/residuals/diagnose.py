"""Where a K-step flow-map sample's error comes from: the sampler restarted from exact states.

On the K-step sampler's times s_0 = T > s_1 > … > s_K, with the exact states x_a = x(s_a) of
held-out trajectories and S_a the student's sampler from s_a to the end (S_K the identity):

    e_from[a] = rel(S_a(x_a), x_K)                      the sample's error had it started exact at s_a
    jump[a]   = rel-size of S_a(x_a) − S_{a+1}(x_{a+1})   the error the a-th jump adds, carried to the end

e_from[0] is the K-step sample's own error and Σ_a jump[a] ≥ it. A flat e_from means the
error is made in the last jumps, near the data, and more steps elsewhere cannot remove it.
"""

from __future__ import annotations

from typing import Any

import torch

from odedistill import relative_error, solve_reference


@torch.no_grad()
def error_by_start(
    model: Any, system: Any, times: list[float], n: int = 128, seed: int = 0
) -> dict[str, Any]:
    """``e_from`` and ``jump`` (lists over a = 0 … K−1) on n held-out states."""
    gen = torch.Generator().manual_seed(seed)
    z = system.sample_initial(n, gen, dtype=torch.float64)
    cond = system.sample_condition(n, gen)
    states = solve_reference(system, z, cond, t_eval=list(times))
    K = len(times) - 1
    end = states[K]

    def sampler_from(a: int) -> torch.Tensor:
        if a == K:
            return end
        return model.jumps(states[a].float(), cond, list(times[a:])).double()

    outs = [sampler_from(a) for a in range(K + 1)]
    norm = end.flatten(1).norm(dim=1).clamp_min(1e-300)
    jump = [((outs[a] - outs[a + 1]).flatten(1).norm(dim=1) / norm).mean().item() for a in range(K)]
    return {
        "times": list(times),
        "e_from": [relative_error(outs[a], end) for a in range(K)],
        "jump": jump,
    }
