"""The exact denoiser of an isotropic Gaussian mixture: D(x; sigma) = E[x0 | x0 + sigma n = x]."""

from __future__ import annotations

import math

import torch
from torch import nn

from odedistill.errors import UserError


class GaussianMixtureDenoiser(nn.Module):
    """Exact posterior-mean denoiser of p(x0) = sum_k w_k N(mu_k, s_k^2 I).

    With x = x0 + sigma n, x ~ sum_k w_k N(mu_k, (s_k^2 + sigma^2) I) and

        D(x; sigma) = sum_k r_k(x) [ (sigma^2 mu_k + s_k^2 x) / (s_k^2 + sigma^2) ],
        r_k(x) = softmax_k( ln w_k - d/2 ln(s_k^2 + sigma^2) - |x - mu_k|^2 / (2 (s_k^2 + sigma^2)) ).

    States may have any shape (vectors or C x H x W images); the mixture is computed in
    float64 and returned in the input's dtype. Class labels are accepted and ignored.

    Args:
        means: (K, *shape) component means.
        stds: per-component standard deviations (K,) or one float.
        weights: mixture weights (K,), normalised here; uniform when omitted.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor | float = 0.05,
        weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
        weights = (
            torch.ones(K, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be K non-negative numbers with a positive sum")
        if (stds < 0).any():
            raise ValueError("standard deviations must be non-negative")
        self.state_shape = tuple(means.shape[1:])
        self.register_buffer("means", means.reshape(K, -1))
        self.register_buffer("stds", stds)
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _posterior(
        self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Responsibilities r (B, K), variances v (B, K) and flat x (B, d) for x = a x0 + b n.

        Given component k, x ~ N(a mu_k, v_k I) with v_k = a^2 s_k^2 + b^2, so
        r_k(x) = softmax_k( ln w_k - d/2 ln v_k - |x - a mu_k|^2 / (2 v_k) ). All float64.
        """
        xf = x.reshape(x.shape[0], -1).double()
        a, b = a.double().reshape(-1, 1), b.double().reshape(-1, 1)
        var = a**2 * self.stds[None, :] ** 2 + b**2  # (B, K)
        sq = (
            (xf * xf).sum(1, keepdim=True)
            - 2 * a * (xf @ self.means.T)
            + a**2 * (self.means * self.means).sum(1)[None, :]
        ).clamp_min(0)
        d = xf.shape[1]
        logits = self.log_weights[None, :] - 0.5 * d * torch.log(var) - sq / (2 * var)
        return torch.softmax(logits, dim=1), var, xf

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities r_k(x) for x = x0 + sigma n, shape (B, K), in float64."""
        sigma = sigma.double().reshape(-1)
        return self._posterior(x, torch.ones_like(sigma), sigma)[0]

    def posterior_means(
        self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """E[x0 | x] and E[n | x] for x = a x0 + b n, n ~ N(0, I), with per-sample a, b (B,).

        With v_k = a^2 s_k^2 + b^2 and the responsibilities r_k(x) above,

            E[x0 | x] = sum_k r_k (b^2 mu_k + a s_k^2 x) / v_k,
            E[n | x]  = sum_k r_k  b (x - a mu_k) / v_k.

        The EDM denoiser is a = 1, b = sigma; the flow-matching interpolation is a = 1 - t,
        b = t. Exact wherever every v_k > 0 (at b = 0 that needs s_k > 0). Returned in float64
        with x's shape.
        """
        r, var, xf = self._posterior(x, a, b)
        a, b = a.double().reshape(-1, 1), b.double().reshape(-1, 1)
        x0 = self._mean_x0(r, var, xf, a, b)
        n = (r * b / var).sum(1, keepdim=True) * xf - (r * a * b / var) @ self.means
        return x0.reshape(x.shape), n.reshape(x.shape)

    def _mean_x0(
        self, r: torch.Tensor, var: torch.Tensor, xf: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        """sum_k r_k (b^2 mu_k + a s_k^2 x) / v_k from ``_posterior``'s outputs; a, b (B, 1)."""
        return (r * b**2 / var) @ self.means + (r * a * self.stds[None, :] ** 2 / var).sum(
            1, keepdim=True
        ) * xf

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(-1)
        one = torch.ones_like(sigma)
        r, var, xf = self._posterior(x, one, sigma)
        x0 = self._mean_x0(r, var, xf, one.reshape(-1, 1), sigma.reshape(-1, 1))
        return x0.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Draw ``n`` samples x0 from the mixture (on the CPU)."""
        k = torch.multinomial(
            self.log_weights.exp().cpu(), n, replacement=True, generator=generator
        )
        noise = torch.randn((n, self.means.shape[1]), generator=generator, dtype=torch.float64)
        x = self.means.cpu()[k] + self.stds.cpu()[k, None] * noise
        return x.reshape(n, *self.state_shape).to(dtype)

    @torch.no_grad()
    def sample_scaled(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw x = a·x0 + b·n per sample (a, b of shape (n,)), x0 from the mixture, n ~ N(0, I):
        the mixture with means a·μ_k and variances a²s_k² + b² (on the CPU)."""
        a, b = a.double().cpu().reshape(-1), b.double().cpu().reshape(-1)
        x0 = self.sample(len(a), generator=generator, dtype=torch.float64)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        shape = (-1,) + (1,) * len(self.state_shape)
        return (a.reshape(shape) * x0 + b.reshape(shape) * noise).to(dtype)

    def sample_marginal(
        self,
        sigma: torch.Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Exact draws of x0 + σ·n at per-sample noise levels σ (n,): the marginal of the
        probability-flow ODE at t = σ, a mixture with variances s_k² + σ²."""
        return self.sample_scaled(torch.ones_like(sigma), sigma, generator, dtype)


class GaussianMixtureVelocity(nn.Module):
    """Exact flow-matching velocity of a Gaussian mixture: v(x_t, t) = E[eps - x0 | x_t].

    With the rectified-flow interpolation x_t = (1 - t) x0 + t eps, eps ~ N(0, I), and
    x0 ~ sum_k w_k N(mu_k, s_k^2 I) (the mixture of ``mixture``),

        v(x_t, t) = E[eps | x_t] - E[x0 | x_t],

    both posterior means in closed form (``GaussianMixtureDenoiser.posterior_means`` with
    a = 1 - t, b = t). This is the EDM denoiser in disguise: with sigma = t / (1 - t),
    v = (x_t - D(x_t / (1 - t); sigma)) / t, but the closed form needs no division by t or
    1 - t, so it is exact on all of [0, 1]: v(x, 1) = x - sum_k w_k mu_k and v(x, 0) = -x
    (for s_k > 0). Class labels are accepted and ignored.
    """

    def __init__(self, mixture: GaussianMixtureDenoiser) -> None:
        super().__init__()
        self.mixture = mixture

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.mixture.state_shape

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)
        x0, eps = self.mixture.posterior_means(x, 1 - t, t)
        return (eps - x0).to(x.dtype)

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Draw ``n`` samples x0 from the mixture (on the CPU)."""
        return self.mixture.sample(n, generator=generator, dtype=dtype)

    def sample_marginal(
        self,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Exact draws of x_t = (1 − t)·x0 + t·ε at per-sample times t (n,): a mixture with
        means (1 − t)·μ_k and variances (1 − t)²s_k² + t²."""
        return self.mixture.sample_scaled(1 - t, t, generator, dtype)


def ring_mixture(modes: int = 8, radius: float = 1.0, std: float = 0.05) -> GaussianMixtureDenoiser:
    """``modes`` equal Gaussians evenly spaced on a circle of ``radius`` in 2-D."""
    angle = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return GaussianMixtureDenoiser(means, std)


def grid_mixture(side: int = 5, spacing: float = 0.5, std: float = 0.05) -> GaussianMixtureDenoiser:
    """``side`` x ``side`` equal Gaussians on a square lattice centred at the origin in 2-D."""
    c = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixtureDenoiser(means, std)


def digits_mixture(count: int = 0, std: float = 0.05) -> GaussianMixtureDenoiser:
    """A mixture whose means are scikit-learn's 8x8 digit images scaled to [-1, 1] (1x8x8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UserError(
            "the digits teacher needs scikit-learn; install it with: pip install -e '.[digits]'"
        ) from e
    images = torch.as_tensor(load_digits().images, dtype=torch.float64)  # (1797, 8, 8) in 0..16
    if count > len(images):
        raise UserError(f"teacher.count = {count}, but scikit-learn has {len(images)} digits")
    if count:
        images = images[:count]
    means = (images / 8.0 - 1.0)[:, None]
    return GaussianMixtureDenoiser(means, std)
