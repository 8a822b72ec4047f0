"""A system checked before any work: its interval, its initial states and dx/dt = f(x, t, cond) on a probe batch.

f must return a floating-point tensor of the states' shape (B, *state_shape), finite at
finite states. A user's mistake is found here, in one sentence naming f, the state and the
time, instead of deep inside training or scipy.
"""

from __future__ import annotations

import math

import torch

from odedistill.errors import UserError
from odedistill.systems.base import ODESystem


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def _state(x: torch.Tensor) -> str:
    values = x.detach().reshape(-1)[:4].tolist()
    more = ", ..." if x.numel() > 4 else ""
    return "[" + ", ".join(f"{v:.4g}" for v in values) + more + "]"


def check_output(
    name: str, v: object, x: torch.Tensor, t: torch.Tensor, what: str = "f"
) -> torch.Tensor:
    """``v = f(x, t)``: a floating tensor of x's shape, finite; else a ``UserError`` naming f."""
    if not isinstance(v, torch.Tensor):
        raise UserError(f"{name}.{what} returned {type(v).__name__}; it must return a tensor")
    if tuple(v.shape) != tuple(x.shape):
        if what != "f":
            raise UserError(
                f"{name}.{what}({x.shape[0]}) returned shape {tuple(v.shape)}; expected "
                f"{tuple(x.shape)} ({x.shape[0]} states of state_shape {tuple(x.shape[1:])})"
            )
        raise UserError(
            f"{name}.f returned shape {tuple(v.shape)} for states of shape {tuple(x.shape)}; "
            f"it must return dx/dt of the states' shape {tuple(x.shape)}"
        )
    if not v.is_floating_point():
        raise UserError(
            f"{name}.{what} returned {v.dtype} values; it must return floating-point values "
            f"(e.g. {x.dtype})"
        )
    bad = ~torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        value = v.reshape(v.shape[0], -1)[i][~torch.isfinite(v.reshape(v.shape[0], -1)[i])][0]
        if what != "f":
            raise UserError(f"{name}.{what} returned {float(value)}; it must be finite")
        raise UserError(
            f"{name}.f returned {float(value)} at state x = {_state(x[i])} and time "
            f"t = {float(t.reshape(-1)[i]):.6g}; f must be finite there (check f, the interval "
            "and the initial states)"
        )
    return v


def check_system(
    system: ODESystem, device: torch.device | str = "cpu", n: int = 4, seed: int = 0
) -> None:
    """Check ``system`` on a probe batch of ``n`` initial states, at t_start and mid-interval.

    Draws from a private generator: the global random state is untouched.
    """
    name = type(system).__name__
    if not isinstance(system, ODESystem):
        raise UserError(
            f"the system must be an odedistill.ODESystem, got {name} (write your ODE as an "
            "ODESystem subclass: docs/custom_ode.md)"
        )
    for attr in ("t_start", "t_end", "state_shape"):
        if not hasattr(system, attr):
            raise UserError(f"{name} does not set {attr} (set it in __init__)")
    try:
        t0, t1 = float(system.t_start), float(system.t_end)
        shape = tuple(int(s) for s in system.state_shape)
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"{name}: t_start, t_end or state_shape is not numbers ({e})") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise UserError(f"{name}: need finite t_start != t_end, got {t0} and {t1}")
    if not shape or min(shape) < 1:
        raise UserError(f"{name}: state_shape must be positive sizes, got {system.state_shape}")
    gen = torch.Generator().manual_seed(seed)
    try:
        z = system.sample_initial(n, gen)
        cond = system.sample_condition(n, gen)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{name}.sample_initial or sample_condition raised {_first_line(e)}"
        ) from None
    z = check_output(name, z, torch.empty(n, *shape), torch.full((n,), t0), "sample_initial")
    if z.dtype != torch.float32:
        raise UserError(
            f"{name}.sample_initial returned {z.dtype} states when asked for the default "
            "torch.float32: honour its dtype argument (e.g. torch.randn(n, ..., dtype=dtype))"
        )
    z = z.to(device)
    cond = None if cond is None else cond.to(device)
    for t_k in (t0, 0.5 * (t0 + t1)):
        t = torch.full((n,), t_k, device=z.device, dtype=z.dtype)
        try:
            with torch.no_grad():
                v = system.f(z, t, cond)
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"{name}.f raised {_first_line(e)} at states of shape {tuple(z.shape)} and time "
                f"t = {t_k:.6g}; f(x, t, cond) gets a batch x (B, ...) and times t (B,)"
            ) from None
        check_output(name, v, z, t)


@torch.no_grad()
def check_along(
    system: ODESystem, grid: torch.Tensor, device: torch.device | str = "cpu", n: int = 16
) -> None:
    """Check f at every time of ``grid`` along Euler paths of ``n`` probe states: the first
    non-finite (or ill-shaped) value is a ``UserError`` naming f, the state and the time."""
    gen = torch.Generator().manual_seed(0)
    x = system.sample_initial(n, gen).to(device)
    cond = system.sample_condition(n, gen)
    cond = None if cond is None else cond.to(device)
    name = type(system).__name__
    times = grid.tolist()
    for t_cur, t_next in zip(times, [*times[1:], times[-1]], strict=True):
        t = torch.full((n,), t_cur, device=x.device, dtype=x.dtype)
        x = x + (t_next - t_cur) * check_output(name, system.f(x, t, cond), x, t).to(x.dtype)
        if not bool(torch.isfinite(x).all()):
            return  # the Euler path itself blew up: no verdict on f
