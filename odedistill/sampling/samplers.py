"""Samplers that turn per-seed noise into samples: a trained student (one step), an EDM teacher
(Algorithm 2), and the system's ODE solved by Euler or Heun at a given number of evaluations."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odedistill.errors import UserError
from odedistill.grids import make_grid
from odedistill.infra.seeds import Samples, SeedNoise, SeedSampler, draw_labels
from odedistill.models.base import TrajectoryModel, output_problem
from odedistill.models.flowmap import check_times
from odedistill.solvers import edm_sampler, euler, heun
from odedistill.systems.base import ODESystem


def _noise_device(system: ODESystem, device: torch.device) -> torch.device:
    """Where per-seed noise is drawn: the model's device for diffusion noise, else the CPU
    (a system's own sampler draws its initial states there)."""
    return device if system.latent_scale() is not None else torch.device("cpu")


def _initial_states(
    system: ODESystem, rnd: SeedNoise, state_shape: tuple[int, ...]
) -> torch.Tensor:
    """One initial state per seed: z = scale·n (diffusion: N(0, T² I)), else the system's sampler."""
    scale = system.latent_scale()
    if scale is not None:
        return rnd.randn(state_shape) * scale
    return torch.cat([system.sample_initial(1, g) for g in rnd.generators])


def _module_device(module: nn.Module) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")


class StudentSampler(SeedSampler):
    """Samples of a trained student: x_θ(z, t_end) in one step, or a flow map in several.

    For the probability-flow ODE z = T·n with n the seed's unit latents, the noise EDM's
    generate.py gives a teacher of the same shape; images are clamped to [−1, 1]. Other systems
    draw z with their own ``sample_initial`` from the seed's (CPU) generator. ``times`` are the
    K + 1 times of a K-step sample (t_start … t_end); a one-time student refuses more than one.
    """

    def __init__(
        self, model: TrajectoryModel, system: ODESystem, times: list[float] | None = None
    ) -> None:
        self.model = model
        self.system = system
        self.times = times
        self.steps = 1 if times is None else len(times) - 1
        self.state_shape = tuple(system.state_shape)
        self.label_dim = int(system.label_dim)
        self.device = _module_device(model)
        self.description = f"student, {self.steps} step{'s' if self.steps > 1 else ''}"
        if times is not None:
            check_times(times, model.t_start, model.t_end)  # before any sampling
        if self.steps > 1 and not model.multi_step:
            raise UserError(
                f"this run's student is a one-time PID student: it samples in one step only, "
                f"not {self.steps} (--steps counts a flow map's steps, or a --teacher's Heun "
                "steps); train a flow map (student.kind = 'flowmap') to sample in several"
            )

    @property
    def noise_device(self) -> torch.device:
        return _noise_device(self.system, self.device)

    @torch.no_grad()
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        system = self.system
        z = _initial_states(system, rnd, self.state_shape)
        cond, idx = draw_labels(rnd, self.label_dim, class_idx)
        was_training = self.model.training
        self.model.eval()
        try:
            c = None if cond is None else cond.to(self.device)
            x = self.model.sample(z.to(self.device), c, self.steps, self.times)
        finally:
            self.model.train(was_training)
        problem = output_problem(x, z)
        if problem is not None:
            raise UserError(
                f"{problem}: the weights diverged or the times are outside what it learnt; "
                "use an earlier checkpoint or other --weights"
            )
        if system.is_image:
            x = x.clamp(-1, 1)
        return Samples(x.cpu(), z.cpu(), None if idx is None else idx.cpu())


class TeacherSampler(SeedSampler):
    """EDM Algorithm 2 (Heun, churn, NFE = 2N − 1) on a denoiser D(x, σ, class_labels).

    As EDM's generate.py: latents are the seed's unit normal noise (B, C, H, W), labels are
    drawn from the seed, σ_min and σ_max are clipped to the network's own range, and the
    images are the float64 result of the sampler. The denoiser needs ``img_channels`` and
    ``img_resolution`` (EDM's preconditioners) or a ``state_shape``; ``label_dim`` defaults to 0.
    EDM's preconditioners cast their input to float32 (fp16 inside where the network asks for
    it), so an EDM network is called with float32 x and σ here too, its output read back as
    float64; other denoisers (the exact Gaussian mixture) get the sampler's float64 states.
    """

    def __init__(
        self,
        net: nn.Module,
        num_steps: int = 18,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        S_churn: float = 0.0,
        S_min: float = 0.0,
        S_max: float = float("inf"),
        S_noise: float = 1.0,
    ) -> None:
        if hasattr(net, "img_channels") and hasattr(net, "img_resolution"):
            r = int(net.img_resolution)
            shape: tuple[int, ...] = (int(net.img_channels), r, r)
        elif hasattr(net, "state_shape"):
            shape = tuple(net.state_shape)
        else:
            raise UserError(
                f"{type(net).__name__} has no img_channels/img_resolution or state_shape; "
                "cannot tell the shape of its samples"
            )
        if num_steps < 1:
            raise UserError(f"--steps must be at least 1, got {num_steps}")
        self.net = net
        self.state_shape = shape
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        self.device = _module_device(net)
        self.float32 = hasattr(net, "img_resolution")
        self.num_steps = num_steps
        self.sigma_min = max(sigma_min, float(getattr(net, "sigma_min", 0.0)))
        self.sigma_max = min(sigma_max, float(getattr(net, "sigma_max", float("inf"))))
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}"
            )
        self.rho = rho
        self.S_churn, self.S_min, self.S_max, self.S_noise = S_churn, S_min, S_max, S_noise
        nfe = 2 * num_steps - 1
        self.description = f"teacher, Heun {num_steps} steps ({nfe} NFE)"

    def _float32_net(
        self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(x.float(), sigma.float(), class_labels=class_labels)

    def _run(
        self, latents: torch.Tensor, labels: torch.Tensor | None, **noise: Any
    ) -> torch.Tensor:
        return edm_sampler(
            self._float32_net if self.float32 else self.net,
            latents.to(self.device),
            None if labels is None else labels.to(self.device),
            num_steps=self.num_steps,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            rho=self.rho,
            S_churn=self.S_churn,
            S_min=self.S_min,
            S_max=self.S_max,
            S_noise=self.S_noise,
            **noise,
        )

    @torch.no_grad()
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        latents = rnd.randn(self.state_shape)
        cond, idx = draw_labels(rnd, self.label_dim, class_idx)
        # churn noise comes from each image's own generator, at every step, as in EDM
        x = self._run(latents, cond, randn_like=rnd.randn_like if self.S_churn > 0 else None)
        z = latents.double() * self.sigma_max
        return Samples(x.cpu(), z.cpu(), None if idx is None else idx.cpu())


class SolverSampler(SeedSampler):
    """The system's ODE solved by Euler or Heun in ``nfe`` evaluations from the seed's noise.

    The start is the student's (z = T·n for the probability-flow ODE, else the system's own
    ``sample_initial`` from the seed's generator), so a solver and a student sample the same
    seeds from the same z. The times are the ``grid`` kind's points from t_start to t_end:
    ``nfe + 1`` for Euler; for Heun ⌈nfe/2⌉ steps, the last one Euler when ``nfe`` is odd
    (EDM's rule: 35 evaluations are 18 steps). Images are clamped to [−1, 1].
    """

    def __init__(
        self, system: ODESystem, method: str, nfe: int, grid: str = "karras", rho: float = 7.0
    ) -> None:
        if method not in ("euler", "heun"):
            raise UserError(f"solver must be 'euler' or 'heun', not {method!r}")
        if nfe < 1:
            raise UserError(f"a solver needs at least 1 evaluation, got {nfe}")
        self.system, self.method, self.nfe = system, method, nfe
        self.state_shape = tuple(system.state_shape)
        self.label_dim = int(system.label_dim)
        teacher = system.teacher
        self.device = torch.device("cpu") if teacher is None else _module_device(teacher)
        if method == "euler":
            points, self.last_step_euler = nfe + 1, False
        else:
            points, self.last_step_euler = (
                (2, True) if nfe == 1 else ((nfe + 1) // 2 + 1, nfe % 2 == 1)
            )
        self.times = make_grid(grid, points, system.t_start, system.t_end, rho)
        self.description = f"teacher, {method.capitalize()} {points - 1} steps ({nfe} NFE)"

    @property
    def noise_device(self) -> torch.device:
        return _noise_device(self.system, self.device)

    @torch.no_grad()
    def sample(self, rnd: SeedNoise, class_idx: int | None = None) -> Samples:
        system = self.system
        z = _initial_states(system, rnd, self.state_shape)
        cond, idx = draw_labels(rnd, self.label_dim, class_idx)
        z = z.to(self.device)
        c = None if cond is None else cond.to(self.device)
        grid = self.times.to(self.device)
        if self.method == "euler":
            x = euler(system, z, grid, c)
        else:
            x = heun(system, z, grid, c, last_step_euler=self.last_step_euler)
        if system.is_image:
            x = x.clamp(-1, 1)
        return Samples(x.cpu(), z.cpu(), None if idx is None else idx.cpu())
