"""The TrajectoryModel interface: x_theta(z, t, cond), the solution of an ODE from x(t_start) = z."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.models.curve import Curve
from odedistill.models.fallback import Checked, Fallback, checked_sample
from odedistill.models.trust import residual_indicator, resolve_system
from odedistill.systems.base import ODESystem

#: the curve t ↦ x(t) of a batch of trajectories: a ``Curve`` whose variable is the time t
Path = Curve


class TrajectoryModel(nn.Module):
    """A network that is a whole solution trajectory: ``x(z, t, cond)`` for per-sample t (B,).

    Implementations build the boundary condition ``x(z, t_start) = z`` into their form so that
    it holds exactly, for every parameter value. One-step sampling is ``x(z, t_end)``.
    """

    t_start: float
    t_end: float
    #: the shape of one state and the number of classes, where the builder records them
    state_shape: tuple[int, ...] | None = None
    #: whether the student samples in several jumps (``sample(z, steps=K)``)
    multi_step: bool = False

    def sample_inputs(
        self, z: object, cond: object = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z`` (B, *state_shape) and ``cond`` as tensors of the network's dtype and device.

        Lists and arrays become tensors and other floating dtypes are cast; a state of the
        wrong shape or a value that is not numeric is a one-line ``UserError`` naming it.
        """
        ref = next(iter([*self.parameters(), *self.buffers()]), None)
        has_dtype = ref is not None and ref.is_floating_point()
        device = ref.device if ref is not None else None
        out = []
        for name, value in (("z", z), ("cond", cond)):
            if value is None:
                out.append(None)
                continue
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise UserError(f"sample: {name} must be a tensor of numbers ({e})") from None
            if value.dtype == torch.bool or value.is_complex():
                raise UserError(f"sample: {name} must be real numbers, got {value.dtype}")
            # a model without weights (a closed form) keeps the input's floating dtype
            dtype = ref.dtype if has_dtype else None
            if dtype is None and not value.is_floating_point():
                dtype = torch.get_default_dtype()
            out.append(value.to(device=device or value.device, dtype=dtype or value.dtype))
        z_t = out[0]
        shape = self.state_shape
        if z_t is None or (shape is not None and tuple(z_t.shape[1:]) != tuple(shape)):
            want = "(B, " + ", ".join(map(str, shape or ("...",))) + ")"
            got = None if z_t is None else tuple(z_t.shape)
            raise UserError(f"sample: z must be a batch of states of shape {want}, got {got}")
        return z_t, out[1]

    @abstractmethod
    def forward(
        self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state at times ``t`` (B,) of the trajectories that start at ``z``."""

    system: ODESystem | None = None

    def attach(self, system: ODESystem | None) -> TrajectoryModel:
        """Hold ``system`` (the ODE this student solves) for ``residual`` and checked samples.

        Kept outside the module's parameters and state dict; a student read from a file holds
        none (nothing named in a file is imported), so give it yours here. Returns the student.
        """
        self.__dict__["system"] = system
        return self

    def path(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> Path:
        """The trajectories from ``z`` as a ``Path`` t ↦ x(z, t, cond)."""
        return Path(lambda t, z, cond: self(z, t, cond), (z, cond))

    # ------------------------------------------------------------- sampling
    def sample_steps(self, steps: int = 1, times: list[float] | None = None) -> list[float]:
        """The times t_start … t_end of a ``steps``-jump sample (a trajectory: one jump only)."""
        if steps != 1 or (times is not None and len(times) != 2):
            raise UserError(
                "this is a one-time student x(z, t): it samples in one step only; a two-time "
                "flow map X(x_s, s, t) samples in several"
            )
        return [self.t_start, self.t_end]

    def jumps(self, z: torch.Tensor, cond: torch.Tensor | None, times: list[float]) -> torch.Tensor:
        """The sample over ``times`` from ``sample_steps``: here ``x(z, t_end)``."""
        t = torch.full((z.shape[0],), self.t_end, device=z.device, dtype=z.dtype)
        return self(z, t, cond)

    def pieces(
        self, z: torch.Tensor, cond: torch.Tensor | None, times: list[float]
    ) -> Iterator[tuple[Path, float, float]]:
        """The sample's path piece by piece, (path, s, t): here one, t_start to t_end."""
        yield self.path(z, cond), self.t_start, self.t_end

    def sample(
        self,
        z: torch.Tensor,
        cond: torch.Tensor | None = None,
        steps: int = 1,
        times: list[float] | None = None,
        *,
        check: bool = False,
        fallback: str | Fallback | None = None,
        threshold: float | None = None,
        fraction: float | None = None,
        system: ODESystem | None = None,
        points: int | None = None,
    ) -> torch.Tensor | Checked:
        """One-step solution ``x(z, t_end)`` (a flow map: ``steps`` jumps over ``times``).

        With ``check`` (or a ``fallback``) returns ``Checked(x, error, resolved)``: ``error`` is
        the per-sample a-posteriori indicator of |x − x*| (``residual``; ``points`` nodes per
        jump, or None: as many as each sample's estimate needs); ``fallback='solver'`` (or a
        function (z, cond) -> x) re-solves the samples whose indicator exceeds ``threshold``,
        or the worst ``fraction`` of them, with the reference solver
        (``odedistill.solve_reference``). ``system`` defaults to ``attach``'s.
        """
        z, cond = self.sample_inputs(z, cond)
        times = self.sample_steps(steps, times)
        x = self.jumps(z, cond, times)
        if not check and fallback is None:
            return x
        system = resolve_system(self, system)
        return checked_sample(
            self, x, z, cond, times, system, fallback, threshold, fraction, points
        )

    def residual(
        self,
        z: torch.Tensor,
        cond: torch.Tensor | None = None,
        steps: int = 1,
        times: list[float] | None = None,
        *,
        system: ODESystem | None = None,
        points: int | None = None,
        kind: str = "auto",
        with_nodes: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-sample a-posteriori error indicator (B,) from r(t) = ∂_t x − f(x, t) along the path.

        'defect' (states of up to 32 numbers): |e(t_end)| of e' = ∂_t x − f(x − e, t),
        e(t_start) = 0, by the implicit trapezoid rule on ``points`` and ``points`` / 2 steps
        and Richardson's extrapolation; with ``points`` None (the default) on 32 nodes per jump
        first, doubled for each sample whose estimate has not converged (to within 10 %), up
        to 512; 'linear': e' = J e + r, its first-order form; 'integral': ∫|r| dt (both on 64
        nodes unless ``points`` says otherwise; ``odedistill.models.trust``).
        Costs about 3 evaluations of the student per node and jump. ``with_nodes``: returns
        ``(indicator, nodes)``, the nodes per jump each sample took (B,).
        """
        z, cond = self.sample_inputs(z, cond)
        times = self.sample_steps(steps, times)
        system = resolve_system(self, system)
        return residual_indicator(self, z, cond, times, system, points, kind, with_nodes)


#: samples larger than this many times (1 + the largest |z|) have exploded
EXPLODED = 1e4


def output_problem(x: torch.Tensor, z: torch.Tensor) -> str | None:
    """Why samples ``x`` of initial states ``z`` cannot be trusted, or None when they are sane.

    Not finite, or exploded: max |x| > EXPLODED · (1 + max |z|), the sign of weights that
    diverged (a trained student maps its initial states to states of a like scale).
    """
    if not bool(torch.isfinite(x).all()):
        return "the student's samples are not finite (nan or inf)"
    bound = EXPLODED * (1.0 + float(z.detach().abs().max()))
    top = float(x.detach().abs().max()) if x.numel() else 0.0
    if top > bound:
        return f"the student's samples have exploded (|x| up to {top:.3g}, above {bound:.3g})"
    return None
