"""Small student networks F(x, c_noise, class_labels): an MLP for vectors and a UNet for images."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from odedistill.models.attention import attention


def _embedding(
    net: nn.Module,
    noise_labels: torch.Tensor,
    class_labels: torch.Tensor | None,
    noise_labels_s: torch.Tensor | None,
) -> torch.Tensor:
    """The time embedding, plus the class's and (flow maps) the source time's."""
    emb = net.emb(noise_labels)
    if net.label is not None and class_labels is not None:
        emb = emb + net.label(class_labels.to(emb.dtype))
    if net.emb_s is not None:
        if noise_labels_s is None:
            raise ValueError("this network takes two times: pass noise_labels_s")
        emb = emb + net.emb_s(noise_labels_s)
    return emb


class FourierTimeEmbedding(nn.Module):
    """Fixed sinusoidal features of a scalar time input, followed by a two-layer MLP."""

    def __init__(self, dim: int, num_freqs: int = 32, max_freq: float = 64.0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), num_freqs))
        self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs[None, :]
        return self.mlp(torch.cat([torch.sin(a), torch.cos(a)], dim=1))


def second_time_embedding(dim: int) -> FourierTimeEmbedding:
    """A flow map's embedding of its source time s, whose output layer starts at zero: a
    network with it computes, at initialisation, exactly what it computes without it."""
    emb = FourierTimeEmbedding(dim)
    nn.init.zeros_(emb.mlp[-1].weight)
    nn.init.zeros_(emb.mlp[-1].bias)
    return emb


class Standardise(nn.Module):
    """(v - mean) / std per column, and back, with fixed buffers."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return (v - self.mean.to(v.dtype)) / self.std.to(v.dtype)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean.to(u.dtype) + self.std.to(u.dtype) * u


def _standardiser(
    mean: list[float] | None, std: list[float] | None, dim: int, what: str
) -> Standardise | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None or len(mean) != dim or len(std) != dim:
        raise ValueError(f"{what}_mean and {what}_std need {dim} values each")
    if not all(s > 0 for s in std):
        raise ValueError(f"{what}_std must be positive")
    return Standardise(list(mean), list(std))


def state_frequencies(m: int, d: int, max_freq: float) -> torch.Tensor | None:
    """B (m, d): m unit directions (fixed seed 0) times frequencies log-spaced from 1 to
    ``max_freq``; None for m = 0. The same for every run, so a checkpoint's buffer matches."""
    if m == 0:
        return None
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(m, d, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    omega = torch.exp(torch.linspace(0.0, math.log(max_freq), m, dtype=torch.float64))
    return (u * omega[:, None]).float()


class MLP(nn.Module):
    """Residual MLP on flattened states with an additive time (and class) embedding.

    Args:
        state_shape: shape of one state (flattened internally).
        width: hidden width.
        depth: number of residual blocks.
        label_dim: size of one-hot class labels (0 for none).
        two_times: add a second time input ``noise_labels_s`` (a flow map's source time),
            embedded by its own branch that starts at zero; built last, so the other
            weights are those of the one-time network of the same seed.
        max_freq: the largest of the 32 Fourier frequencies of the time input (rad per unit).
        x_mean, x_std: standardise the flattened state input, (x - x_mean) / x_std (None: as is).
        c_mean, c_std: the same for the condition (any (B, k) float tensor, class labels
            included).
        out_mean, out_std: the output is out_mean + out_std * (the last layer's), so a network
            at initialisation answers states of the data's scale (None: as is).
        x_fourier: m > 0 appends sin(B h), cos(B h) to the state input h (after any
            standardising), B = (ω_j u_j) with m fixed unit directions u_j (seed 0) and
            frequencies ω_j log-spaced from 1 to ``x_fourier_max`` (Tancik et al. 2020's Fourier
            features): a map that changes sharply with the state, such as a flow map across
            the boundary between two modes, is then within a few layers' reach.
        x_fourier_max: the largest frequency ω_m (rad per unit of the input).
    """

    def __init__(
        self,
        state_shape: tuple[int, ...],
        width: int = 256,
        depth: int = 4,
        label_dim: int = 0,
        two_times: bool = False,
        max_freq: float = 64.0,
        x_mean: list[float] | None = None,
        x_std: list[float] | None = None,
        c_mean: list[float] | None = None,
        c_std: list[float] | None = None,
        out_mean: list[float] | None = None,
        out_std: list[float] | None = None,
        x_fourier: int = 0,
        x_fourier_max: float = 16.0,
    ) -> None:
        super().__init__()
        self.state_shape = tuple(state_shape)
        d = math.prod(self.state_shape)
        self.register_buffer("x_freqs", state_frequencies(x_fourier, d, x_fourier_max))
        self.inp = nn.Linear(d + 2 * x_fourier, width)
        self.emb = FourierTimeEmbedding(width, max_freq=max_freq)
        self.label = nn.Linear(label_dim, width, bias=False) if label_dim else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, d))
        self.emb_s = second_time_embedding(width) if two_times else None
        self.x_norm = _standardiser(x_mean, x_std, d, "x")
        self.c_norm = _standardiser(c_mean, c_std, label_dim, "c")
        self.out_scale = _standardiser(out_mean, out_std, d, "out")

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        noise_labels_s: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.c_norm is not None and class_labels is not None:
            class_labels = self.c_norm(class_labels)
        emb = _embedding(self, noise_labels, class_labels, noise_labels_s)
        h = x.reshape(x.shape[0], -1)
        h = h if self.x_norm is None else self.x_norm(h)
        if self.x_freqs is not None:
            a = h @ self.x_freqs.to(h.dtype).T
            h = torch.cat([h, torch.sin(a), torch.cos(a)], dim=1)
        h = self.inp(h) + emb
        for block in self.blocks:
            h = h + block(h + emb)
        out = self.out(h)
        if self.out_scale is not None:
            out = self.out_scale.inverse(out)
        return out.reshape(x.shape)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm0 = nn.GroupNorm(min(groups, cin), cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_dim, cout)
        self.norm1 = nn.GroupNorm(min(groups, cout), cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(torch.nn.functional.silu(self.norm0(x)))
        h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(torch.nn.functional.silu(self.norm1(h)))
        return h + self.skip(x)


class _SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = rearrange(
            self.qkv(self.norm(x)), "b (three h c) y x -> three b h (y x) c", three=3, h=self.heads
        )
        a = attention(q, k, v)
        return x + self.proj(rearrange(a, "b h (y x) c -> b (h c) y x", y=H, x=W))


class SmallUNet(nn.Module):
    """A compact UNet for small images (e.g. 1x8x8 digits) with attention at the lowest resolution.

    Args:
        state_shape: (C, H, W); H and W must be divisible by 2^(len(channel_mult) - 1).
        channels: base width.
        channel_mult: width multipliers per resolution level.
        blocks: residual blocks per level.
        attention: add a self-attention block at the lowest resolution.
        label_dim: size of one-hot class labels (0 for none).
        two_times: a second time input, as for ``MLP``.
    """

    def __init__(
        self,
        state_shape: tuple[int, int, int],
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        blocks: int = 1,
        attention: bool = True,
        heads: int = 1,
        label_dim: int = 0,
        two_times: bool = False,
    ) -> None:
        super().__init__()
        C, H, W = state_shape
        levels = len(channel_mult)
        if H % 2 ** (levels - 1) or W % 2 ** (levels - 1):
            raise ValueError(f"image size {H}x{W} is not divisible by 2^{levels - 1}")
        groups, emb_dim = 8, 4 * channels
        self.emb = FourierTimeEmbedding(emb_dim)
        self.label = nn.Linear(label_dim, emb_dim, bias=False) if label_dim else None
        self.inp = nn.Conv2d(C, channels, 3, padding=1)
        self.down = nn.ModuleList()
        widths = [channels]
        cur = channels
        for lvl, mult in enumerate(channel_mult):
            for _ in range(blocks):
                self.down.append(_ResBlock(cur, channels * mult, emb_dim, groups))
                cur = channels * mult
                widths.append(cur)
            if lvl < levels - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                widths.append(cur)
        self.mid = nn.ModuleList(
            [_ResBlock(cur, cur, emb_dim, groups), _ResBlock(cur, cur, emb_dim, groups)]
        )
        self.mid_attn = _SelfAttention(cur, heads, groups) if attention else None
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(blocks + 1):
                self.up.append(_ResBlock(cur + widths.pop(), channels * mult, emb_dim, groups))
                cur = channels * mult
            if lvl > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out_norm = nn.GroupNorm(min(groups, cur), cur)
        self.out = nn.Conv2d(cur, C, 3, padding=1)
        self.emb_s = second_time_embedding(emb_dim) if two_times else None

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        noise_labels_s: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = _embedding(self, noise_labels, class_labels, noise_labels_s)
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            skips.append(h)
        h = self.mid[0](h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid[1](h, emb)
        for layer in self.up:
            if isinstance(layer, _ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))
