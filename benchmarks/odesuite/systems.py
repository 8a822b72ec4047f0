"""The odesuite: ten initial-value problems with their interval, initial states, N and grid.

Each is a small ``odedistill.ODESystem`` subclass, as a user would write one. Two are families
with a continuous parameter as the condition (Van der Pol's mu, SIR's (beta, gamma)), two have a
3-D state (SIR, Lorenz), two a time-dependent field (the forced Duffing and the forced linear
oscillator), one is stiff (Van der Pol with mu = 10: a relaxation layer of width 1/mu) and one
conservative with a 4-D state (a Kepler orbit over one period). N is the smallest round number
at which Euler with N - 1 steps is a few per cent off and blows up on no test state: the grid of
the secondary Euler(N - 1) ratio (general ODEs train at continuous times).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from odedistill import DampedPendulum, ODESystem


def _uniform(n, lo, hi, generator, dtype=torch.float32):
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=dtype)


class VanDerPolFamily(ODESystem):
    """x' = y, y' = mu (1 - x^2) y - x; z ~ U[-spread, spread]^2; mu ~ U[mu_lo, mu_hi], (B, 1)."""

    def __init__(self, T=2.0, spread=2.0, mu_lo=0.5, mu_hi=2.0):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.spread, self.mu_lo, self.mu_hi = spread, mu_lo, mu_hi
        self.label_dim = 1

    def f(self, x, t, cond=None):
        mu = cond[:, 0].to(x.dtype)
        a, b = x[:, 0], x[:, 1]
        return torch.stack([b, mu * (1 - a * a) * b - a], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return (2 * torch.rand((n, 2), generator=generator, dtype=dtype) - 1) * self.spread

    def sample_condition(self, n, generator=None):
        return _uniform(n, self.mu_lo, self.mu_hi, generator)[:, None]


class ForcedDuffing(ODESystem):
    """Double-well Duffing with forcing: x' = y, y' = -delta y + x - x^3 + gamma cos(omega t);
    z ~ U[-spread, spread]^2."""

    def __init__(self, T=2.0, spread=1.5, delta=0.3, gamma=0.5, omega=1.2):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.spread, self.delta, self.gamma, self.omega = spread, delta, gamma, omega

    def f(self, x, t, cond=None):
        a, b = x[:, 0], x[:, 1]
        force = self.gamma * torch.cos(self.omega * t.to(x.dtype))
        return torch.stack([b, -self.delta * b + a - a**3 + force], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return (2 * torch.rand((n, 2), generator=generator, dtype=dtype) - 1) * self.spread


class SIRFamily(ODESystem):
    """S' = -beta S I, I' = beta S I - gamma I, R' = gamma I; I0 ~ U[0.01, 0.2], R0 ~ U[0, 0.2],
    S0 = 1 - I0 - R0; the condition (beta, gamma) ~ U[1, 3] x U[0.2, 0.6], (B, 2)."""

    def __init__(self, T=6.0, beta=(1.0, 3.0), gamma=(0.2, 0.6)):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (3,)
        self.beta, self.gamma = tuple(beta), tuple(gamma)
        self.label_dim = 2

    def f(self, x, t, cond=None):
        beta, gamma = cond[:, 0].to(x.dtype), cond[:, 1].to(x.dtype)
        s, i = x[:, 0], x[:, 1]
        infections, recoveries = beta * s * i, gamma * i
        return torch.stack([-infections, infections - recoveries, recoveries], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        i0 = _uniform(n, 0.01, 0.2, generator, dtype)
        r0 = _uniform(n, 0.0, 0.2, generator, dtype)
        return torch.stack([1 - i0 - r0, i0, r0], dim=1)

    def sample_condition(self, n, generator=None):
        return torch.stack(
            [_uniform(n, *self.beta, generator), _uniform(n, *self.gamma, generator)], dim=1
        )


class Brusselator(ODESystem):
    """x' = a + x^2 y - (b + 1) x, y' = b x - x^2 y (a = 1, b = 3: a limit cycle);
    x0 ~ U[0.5, 2.5], y0 ~ U[1, 4]."""

    def __init__(self, T=4.0, a=1.0, b=3.0):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.a, self.b = a, b

    def f(self, x, t, cond=None):
        u, v = x[:, 0], x[:, 1]
        u2v = u * u * v
        return torch.stack([self.a + u2v - (self.b + 1) * u, self.b * u - u2v], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return torch.stack(
            [_uniform(n, 0.5, 2.5, generator, dtype), _uniform(n, 1.0, 4.0, generator, dtype)],
            dim=1,
        )


class LorenzShort(ODESystem):
    """Lorenz (sigma 10, rho 28, beta 8/3) over a short horizon; z ~ (0, 0, 25) + N(0, 6^2 I)."""

    def __init__(self, T=0.3, spread=6.0, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (3,)
        self.spread, self.sigma, self.rho, self.beta = spread, sigma, rho, beta

    def f(self, x, t, cond=None):
        a, b, c = x[:, 0], x[:, 1], x[:, 2]
        return torch.stack(
            [self.sigma * (b - a), a * (self.rho - c) - b, a * b - self.beta * c], dim=1
        )

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        z = torch.randn((n, 3), generator=generator, dtype=dtype) * self.spread
        z[:, 2] += 25.0
        return z


class LotkaVolterra(ODESystem):
    """x' = a x - b x y, y' = d x y - c y (a = 1, b = 0.5, c = 1, d = 0.5); z ~ U[1, 3]^2."""

    def __init__(self, T=2.0, a=1.0, b=0.5, c=1.0, d=0.5):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.a, self.b, self.c, self.d = a, b, c, d

    def f(self, x, t, cond=None):
        u, v = x[:, 0], x[:, 1]
        return torch.stack([self.a * u - self.b * u * v, self.d * u * v - self.c * v], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return 1 + 2 * torch.rand((n, 2), generator=generator, dtype=dtype)


class ForcedOscillator(ODESystem):
    """The damped, forced linear oscillator x'' + 0.3 x' + x = 0.5 cos(1.2 t) as x' = y,
    y' = -0.3 y - x + 0.5 cos(1.2 t); z ~ U[-spread, spread]^2."""

    def __init__(self, T=6.0, spread=2.0, delta=0.3, gamma=0.5, omega=1.2):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.spread, self.delta, self.gamma, self.omega = spread, delta, gamma, omega

    def f(self, x, t, cond=None):
        a, b = x[:, 0], x[:, 1]
        force = self.gamma * torch.cos(self.omega * t.to(x.dtype))
        return torch.stack([b, -self.delta * b - a + force], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return (2 * torch.rand((n, 2), generator=generator, dtype=dtype) - 1) * self.spread


class StiffVanDerPol(ODESystem):
    """Van der Pol with mu = 10 (stiff): x' = y, y' = mu (1 - x^2) y - x; z ~ U[-2, 2]^2."""

    def __init__(self, T=1.0, mu=10.0, spread=2.0):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (2,)
        self.mu, self.spread = mu, spread

    def f(self, x, t, cond=None):
        a, b = x[:, 0], x[:, 1]
        return torch.stack([b, self.mu * (1 - a * a) * b - a], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        return (2 * torch.rand((n, 2), generator=generator, dtype=dtype) - 1) * self.spread


class KeplerOrbit(ODESystem):
    """The Kepler problem q'' = -q / |q|^3 over one circular period 2 pi, state (q, p) in R^4;
    q0 = (r, 0) with r ~ U[0.9, 1.1], p0 = (0, v) with v ~ U[0.9, 1.1] / sqrt(r): bound,
    mildly eccentric orbits whose energy and angular momentum are conserved."""

    def __init__(self, T=2 * math.pi):
        self.t_start, self.t_end, self.state_shape = 0.0, T, (4,)

    def f(self, x, t, cond=None):
        q, p = x[:, :2], x[:, 2:]
        r3 = (q * q).sum(dim=1, keepdim=True) ** 1.5
        return torch.cat([p, -q / r3], dim=1)

    def sample_initial(self, n, generator=None, dtype=torch.float32):
        r = _uniform(n, 0.9, 1.1, generator, dtype)
        v = _uniform(n, 0.9, 1.1, generator, dtype) / r.sqrt()
        zero = torch.zeros_like(r)
        return torch.stack([r, zero, zero, v], dim=1)


@dataclass(frozen=True)
class SuiteSystem:
    """One entry of the suite: how to build it, its N and grid, and the report's description."""

    build: Callable[[], ODESystem]
    N: int
    grid: str
    equations: str
    interval: str
    initial: str
    condition: str


SUITE: dict[str, SuiteSystem] = {
    "vdp": SuiteSystem(
        VanDerPolFamily, 64, "uniform", "x' = y, y' = mu (1 - x^2) y - x", "[0, 2]",
        "U[-2, 2]^2", "mu ~ U[0.5, 2], (B, 1)",
    ),
    "duffing": SuiteSystem(
        ForcedDuffing, 96, "uniform",
        "x' = y, y' = -0.3 y + x - x^3 + 0.5 cos(1.2 t)", "[0, 2]", "U[-1.5, 1.5]^2", "-",
    ),
    "sir": SuiteSystem(
        SIRFamily, 16, "uniform", "S' = -b S I, I' = b S I - g I, R' = g I (dim 3)", "[0, 6]",
        "I0 ~ U[0.01, 0.2], R0 ~ U[0, 0.2], S0 = 1 - I0 - R0", "(b, g) ~ U[1, 3] x U[0.2, 0.6], (B, 2)",
    ),
    "brusselator": SuiteSystem(
        Brusselator, 40, "uniform", "x' = 1 + x^2 y - 4 x, y' = 3 x - x^2 y", "[0, 4]",
        "U[0.5, 2.5] x U[1, 4]", "-",
    ),
    "lorenz": SuiteSystem(
        LorenzShort, 64, "uniform", "Lorenz, sigma 10, rho 28, beta 8/3 (dim 3)", "[0, 0.3]",
        "(0, 0, 25) + N(0, 36 I)", "-",
    ),
    "pendulum3": SuiteSystem(
        lambda: DampedPendulum(gamma=0.25, T=3.0, spread=1.5), 128, "uniform",
        "theta' = omega, omega' = -sin(theta) - 0.25 omega", "[0, 3]", "N(0, 1.5^2 I)", "-",
    ),
    "lotka": SuiteSystem(
        LotkaVolterra, 16, "uniform", "x' = x - 0.5 x y, y' = 0.5 x y - y", "[0, 2]",
        "U[1, 3]^2", "-",
    ),
    "oscillator": SuiteSystem(
        ForcedOscillator, 512, "uniform", "x' = y, y' = -0.3 y - x + 0.5 cos(1.2 t)", "[0, 6]",
        "U[-2, 2]^2", "-",
    ),
    "vdp_stiff": SuiteSystem(
        StiffVanDerPol, 256, "uniform", "x' = y, y' = 10 (1 - x^2) y - x (stiff)", "[0, 1]",
        "U[-2, 2]^2", "-",
    ),
    "kepler": SuiteSystem(
        KeplerOrbit, 8192, "uniform", "q' = p, p' = -q / |q|^3 (dim 4, conservative)",
        "[0, 2 pi]", "q0 = (r, 0), r ~ U[0.9, 1.1]; p0 = (0, U[0.9, 1.1] / sqrt(r))", "-",
    ),
}  # fmt: skip
