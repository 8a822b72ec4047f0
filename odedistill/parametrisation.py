"""The student's parametrisation: where z's weight vanishes (t_anchor), the input scale c_in and the time input c_noise.

A trajectory x(z, t) = w(t)·z + (1 − w(t))·F(c_in·z, c_noise(t)), w(t) = (t − t_anchor)/(t_start − t_anchor),
needs three choices beside the network F. For a student copied from a teacher they must be the
teacher's own (EDM Table 1: c_in(σ) and c_noise(σ) of EDM, VP or VE preconditioning), or the
copied network sees inputs it was never trained on; a DDPM-style teacher's time input is its
fractional timestep, a table lookup (``DiscreteTimesteps``). Every map here is named and
described by numbers only, so a checkpoint can store it as JSON and rebuild it without
running code.

``SkipScaling`` describes, by numbers too, a teacher's own skip and output scales c_skip(σ),
c_out(σ): what a flow map's skip term takes from the teacher's preconditioning.

The module sits below the systems, which name their default parametrisation and skip.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from odedistill.errors import UserError
from odedistill.schedules import vp_sigma_inv


class TimeMap(ABC):
    """A named scalar map of time, t ↦ m(t), on floats and on per-sample tensors."""

    kind: ClassVar[str]

    @abstractmethod
    def __call__(self, t: Tensor) -> Tensor: ...

    def params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeMap) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------- c_noise
class IdentityTime(TimeMap):
    """c_noise(t) = t."""

    kind = "identity"

    def __call__(self, t: Tensor) -> Tensor:
        return t


class UnitTime(TimeMap):
    """c_noise(t) = (t − t_start)/(t_end − t_start): the fraction of the interval, 0 … 1."""

    kind = "unit"

    def __init__(self, t_start: float, t_end: float) -> None:
        self.t_start, self.t_end = float(t_start), float(t_end)
        if self.t_end == self.t_start:
            raise UserError("a unit time map needs t_end != t_start")

    def params(self) -> dict[str, Any]:
        return {"t_start": self.t_start, "t_end": self.t_end}

    def __call__(self, t: Tensor) -> Tensor:
        return (t - self.t_start) / (self.t_end - self.t_start)


class EDMNoise(TimeMap):
    """c_noise(σ) = ln(σ)/4 (EDM)."""

    kind = "edm"

    def __call__(self, t: Tensor) -> Tensor:
        return torch.log(t) / 4


class VPNoise(TimeMap):
    """c_noise(σ) = (M − 1)·t_VP(σ) (VP, Song et al. 2021)."""

    kind = "vp"

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000) -> None:
        self.beta_d, self.beta_min, self.M = float(beta_d), float(beta_min), int(M)

    def params(self) -> dict[str, Any]:
        return {"beta_d": self.beta_d, "beta_min": self.beta_min, "M": self.M}

    def __call__(self, t: Tensor) -> Tensor:
        return (self.M - 1) * vp_sigma_inv(t, self.beta_d, self.beta_min)


class VENoise(TimeMap):
    """c_noise(σ) = ln(σ/2) (VE, Song et al. 2021)."""

    kind = "ve"

    def __call__(self, t: Tensor) -> Tensor:
        return (0.5 * t).log()


class DiscreteTimesteps(TimeMap):
    """c_noise(σ) = the fractional timestep of a discrete schedule σ_0 < σ_1 < … < σ_{N−1}.

        t(σ) = k + (ln σ − ln σ_k)/(ln σ_{k+1} − ln σ_k)   for σ_k ≤ σ ≤ σ_{k+1}

    linear in ln σ between neighbouring training timesteps (k-diffusion's ``sigma_to_t``),
    exact on them (t(σ_k) = k), and clamped to [0, N−1] outside the table. A DDPM-style
    network trained on timesteps k takes t(σ) as its time input. Described by the table
    alone, in float64; the result is float64.
    """

    kind = "timesteps"

    def __init__(self, sigmas: Sequence[float]) -> None:
        values = tuple(float(s) for s in sigmas)
        if len(values) < 2 or not all(math.isfinite(s) and s > 0 for s in values):
            raise UserError("a timestep table needs at least two finite σ > 0")
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise UserError("a timestep table's σ must increase strictly with the timestep")
        self.sigmas = values
        self._log_sigmas: dict[torch.device, Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {"sigmas": list(self.sigmas)}

    def log_sigmas(self, device: torch.device | str = "cpu") -> Tensor:
        """ln σ_k, k = 0 … N−1, as a float64 tensor on ``device`` (cached)."""
        device = torch.device(device)
        if device not in self._log_sigmas:
            table = torch.tensor(self.sigmas, dtype=torch.float64)
            self._log_sigmas[device] = table.log().to(device)
        return self._log_sigmas[device]

    def __call__(self, t: Tensor) -> Tensor:
        log_sigma = torch.as_tensor(t).to(torch.float64).log()
        ls = self.log_sigmas(log_sigma.device)
        flat = log_sigma.reshape(-1)
        hi = torch.searchsorted(ls, flat.detach()).clamp(1, len(ls) - 1)
        lo = hi - 1
        w = ((flat - ls[lo]) / (ls[hi] - ls[lo])).clamp(0, 1)
        return (lo + w).reshape(log_sigma.shape)


# ------------------------------------------------------------------------------------ c_in
class ConstantScale(TimeMap):
    """c_in(s) = value."""

    kind = "constant"

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def params(self) -> dict[str, Any]:
        return {"value": self.value}

    def __call__(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.value)

    def at(self, t: float) -> float:
        return self.value


class RootScale(TimeMap):
    """c_in(σ) = 1/√(σ² + a²): EDM with a = σ_data, VP with a = 1."""

    kind = "rsqrt"

    def __init__(self, a: float) -> None:
        self.a = float(a)

    def params(self) -> dict[str, Any]:
        return {"a": self.a}

    def __call__(self, t: Tensor) -> Tensor:
        return 1 / (t**2 + self.a**2).sqrt()

    def at(self, t: float) -> float:
        return 1.0 / math.sqrt(self.a**2 + t**2)


MAPS: dict[str, type[TimeMap]] = {
    cls.kind: cls
    for cls in (
        IdentityTime,
        UnitTime,
        EDMNoise,
        VPNoise,
        VENoise,
        DiscreteTimesteps,
        ConstantScale,
        RootScale,
    )
}
"""Every time map by its ``kind``: what a stored parametrisation may name."""


def time_map(spec: dict[str, Any]) -> TimeMap:
    """Rebuild a map from ``to_dict()`` output; unknown kinds and arguments are errors."""
    if not isinstance(spec, dict) or spec.get("kind") not in MAPS:
        raise UserError(f"unknown time map {spec!r}; known kinds: {', '.join(MAPS)}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return MAPS[spec["kind"]](**args)
    except TypeError as e:
        raise UserError(f"bad arguments for time map {spec['kind']!r}: {e}") from None


@dataclass(frozen=True)
class Parametrisation:
    """How a trajectory wraps its network: t_anchor, the input scale c_in(s) and c_noise(t).

    ``c_in`` is evaluated at the time the state is given (t_start for a PID student, the
    source time s for a flow map); ``c_noise`` at the time the network is asked about.
    """

    t_anchor: float
    c_in: ConstantScale | RootScale
    c_noise: TimeMap

    @classmethod
    def edm(cls, sigma_data: float = 0.5) -> Parametrisation:
        """PID's choice for the probability-flow ODE: anchor 0, c_in = 1/√(σ_d² + s²), c_noise = ln(t)/4."""
        return cls(0.0, RootScale(sigma_data), EDMNoise())

    @classmethod
    def plain(cls, t_anchor: float) -> Parametrisation:
        """For a general ODE: the state as it is (c_in = 1) and the time itself as input."""
        return cls(float(t_anchor), ConstantScale(1.0), IdentityTime())

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_anchor": self.t_anchor,
            "c_in": self.c_in.to_dict(),
            "c_noise": self.c_noise.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Parametrisation:
        try:
            c_in = time_map(d["c_in"])
            if not isinstance(c_in, ConstantScale | RootScale):
                raise UserError(f"c_in must be a constant or rsqrt scale, not {c_in.kind!r}")
            return cls(float(d["t_anchor"]), c_in, time_map(d["c_noise"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"malformed parametrisation {d!r} ({e})") from None


@dataclass(frozen=True)
class SkipScaling:
    """A teacher's skip and output scales c_skip(σ), c_out(σ) (EDM Table 1), named by numbers.

    - ``'edm'``: c_skip = σ_d²/(σ² + σ_d²), c_out = sign·σ·σ_d/√(σ² + σ_d²) with σ_d =
      ``sigma_data`` (EDM; a v-prediction network is σ_d = 1, sign = −1);
    - ``'linear'``: c_skip = 1, c_out = sign·σ (VP and an ε-prediction network: −1; VE: +1);
    - ``'data'``: c_skip = 0, c_out = 1 (a network that predicts the data itself).

    A flow map takes them shifted so that s = T is left alone (``shifted``):
    a(s) = c_skip(s) − c_skip(T), b(s) = c_out(s)/c_out(T); c_out's sign cancels there.
    """

    kind: str
    sigma_data: float = 0.5
    sign: float = 1.0

    KINDS: ClassVar[tuple[str, ...]] = ("edm", "linear", "data")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise UserError(f"unknown skip scaling {self.kind!r}; known: {', '.join(self.KINDS)}")
        if not (math.isfinite(self.sigma_data) and self.sigma_data > 0):
            raise UserError(f"a skip scaling needs sigma_data > 0, got {self.sigma_data!r}")
        if self.sign not in (1.0, -1.0):
            raise UserError(f"a skip scaling's sign is 1 or -1, got {self.sign!r}")

    @classmethod
    def edm(cls, sigma_data: float = 0.5, sign: float = 1.0) -> SkipScaling:
        return cls("edm", float(sigma_data), float(sign))

    @classmethod
    def linear(cls, sign: float = 1.0) -> SkipScaling:
        return cls("linear", sign=float(sign))

    @classmethod
    def data(cls) -> SkipScaling:
        return cls("data")

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip(σ), c_out(σ)) in σ's dtype."""
        if self.kind == "edm":
            sd2 = self.sigma_data**2
            c_out = sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5
            return sd2 / (sigma**2 + sd2), c_out if self.sign == 1.0 else -c_out
        if self.kind == "linear":
            return torch.ones_like(sigma), sigma if self.sign == 1.0 else -sigma
        return torch.zeros_like(sigma), torch.ones_like(sigma)

    def shifted(self, s: Tensor, t_start: float) -> tuple[Tensor, Tensor]:
        """(a(s), b(s)) = (c_skip(s) − c_skip(T), c_out(s)/c_out(T)) in float64, T = ``t_start``;
        exactly (0, 1) at s = T (T goes through the same arithmetic as s)."""
        s64 = s.double()
        c_skip, c_out = self.coefficients(s64)
        c_skip_T, c_out_T = self.coefficients(torch.full_like(s64, t_start))
        return c_skip - c_skip_T, c_out / c_out_T

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "edm":
            d["sigma_data"] = self.sigma_data
        if self.kind != "data":
            d["sign"] = self.sign
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkipScaling:
        if not isinstance(d, dict) or not set(d) <= {"kind", "sigma_data", "sign"}:
            raise UserError(f"malformed skip scaling {d!r}")
        try:
            return cls(str(d["kind"]), float(d.get("sigma_data", 0.5)), float(d.get("sign", 1.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"malformed skip scaling {d!r} ({e})") from None
