"""EDM teachers (Karras et al. 2022): checkpoint layouts, Table 1 preconditioning, JVP vs FD."""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from odedistill.errors import UserError
from odedistill.teachers.networks import (
    Conv2d,
    DhariwalUNet,
    PositionalEmbedding,
    SongUNet,
    UNetBlock,
)
from odedistill.teachers.precond import (
    EDMPrecond,
    VEPrecond,
    VPPrecond,
    build_edm_module,
    edm_coefficients,
    ve_coefficients,
    vp_coefficients,
    vp_sigma,
    vp_sigma_inv,
)

# --------------------------------------------------------------------------------------------
# Full released configurations against the reference key lists.

_DDPMPP = dict(
    model_type="SongUNet",
    augment_dim=9,
    dropout=0.13,
    model_channels=128,
    channel_mult=[2, 2, 2],
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=[1, 1],
)
_NCSNPP = dict(
    _DDPMPP,
    embedding_type="fourier",
    channel_mult_noise=2,
    encoder_type="residual",
    resample_filter=[1, 3, 3, 1],
)
_ADM = dict(
    model_type="DhariwalUNet",
    model_channels=192,
    channel_mult=[1, 2, 3, 4],
    num_blocks=3,
    attn_resolutions=[32, 16, 8],
    dropout=0.1,
)

# name -> (EDMPrecond kwargs, reference file, drop these key prefixes, entries, sha256, params)
# The sha256 is over the sorted "key [shape]" lines of the reference file, so the layout test
# runs even where the reference files are not mounted. Parameter counts exclude buffers
# (resample filters, Fourier frequencies), as the reference headers do. The unconditional VP
# file is the conditional one without map_label (128x10 weight + 128 bias = 1,408 parameters).
CONFIGS = {
    "cifar10-cond-vp": (
        dict(img_resolution=32, img_channels=3, label_dim=10, **_DDPMPP),
        "statedict_keys_edm-cifar10-32x32-cond-vp.txt",
        (),
        427,
        "2fa7b34b55c2aa1fc001e382c05cd6643319622b15ced94970e27ca34bc10aff",
        55_735_299,
    ),
    "cifar10-uncond-vp": (
        dict(img_resolution=32, img_channels=3, label_dim=0, **_DDPMPP),
        "statedict_keys_edm-cifar10-32x32-cond-vp.txt",
        ("model.map_label.",),
        425,
        "5b64854adf30015fc75adc6c061a84a176303695d0be57736e9ec7344e4f6f6d",
        55_735_299 - 1_408,
    ),
    "cifar10-uncond-ve": (
        dict(img_resolution=32, img_channels=3, label_dim=0, **_NCSNPP),
        "statedict_keys_edm-cifar10-32x32-uncond-ve_ncsnpp.txt",
        (),
        432,
        "ea8d0e56f3c0f15893049ab65d6e0a2ed29fa07e384b612f314272c96d5f6ddb",
        56_397_827,
    ),
    "imagenet64-cond-adm": (
        dict(img_resolution=64, img_channels=3, label_dim=1000, augment_dim=0, **_ADM),
        "statedict_keys_edm-imagenet-64x64-cond-adm.txt",
        (),
        553,
        "462dae53f27654f3f7f3167272cd08cacea1aa52fa444c18ace4a3e3e682a4ae",
        295_899_267,
    ),
}


def _reference_dir() -> Path | None:
    candidates = [
        os.environ.get("ODEDISTILL_EDM_REFERENCE_DIR"),
        Path(__file__).resolve().parents[1] / "shared" / "reference",
        "/work/shared/reference",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _parse_reference(path: Path) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(parameter count from the header, {state-dict key: shape}) of a reference file."""
    lines = path.read_text().splitlines()
    params = int(re.search(r"params (\d+)", lines[0]).group(1))
    layout = {}
    for line in lines[1:]:
        if line.strip():
            key, rest = line.split(" ", 1)
            shape, dtype = rest.rsplit(" ", 1)
            assert dtype == "float32"
            layout[key] = tuple(int(n) for n in re.findall(r"\d+", shape))
    return params, layout


def _digest(layout: dict[str, tuple[int, ...]]) -> str:
    text = "\n".join(f"{key} {list(shape)}" for key, shape in sorted(layout.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _build_on_meta(kwargs: dict) -> nn.Module:
    with torch.device("meta"):
        return build_edm_module("training.networks.EDMPrecond", kwargs)


def _layout(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_full_configuration_has_the_checkpoint_layout(name: str) -> None:
    kwargs, _, _, entries, digest, params = CONFIGS[name]
    net = _build_on_meta(kwargs)
    layout = _layout(net)
    assert len(layout) == entries
    assert _digest(layout) == digest
    assert sum(p.numel() for p in net.parameters()) == params
    assert all(v.dtype == torch.float32 for v in net.state_dict().values())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_full_configuration_matches_reference_file(name: str) -> None:
    ref_dir = _reference_dir()
    if ref_dir is None:
        pytest.skip("reference key lists not found (set ODEDISTILL_EDM_REFERENCE_DIR)")
    kwargs, filename, dropped, _, _, params = CONFIGS[name]
    header_params, full_reference = _parse_reference(ref_dir / filename)
    reference = {k: v for k, v in full_reference.items() if not k.startswith(dropped)}
    dropped_params = sum(math.prod(v) for k, v in full_reference.items() if k.startswith(dropped))
    net = _build_on_meta(kwargs)
    layout = _layout(net)
    assert sorted(set(reference) - set(layout)) == [], "keys missing from our network"
    assert sorted(set(layout) - set(reference)) == [], "keys our network has in excess"
    assert {k: v for k, v in layout.items() if reference[k] != v} == {}, "shape mismatches"
    assert list(layout) == list(reference), "same keys, different registration order"
    # Every reference entry is a parameter except the buffers (resample filters, Fourier freqs).
    assert sum(p.numel() for p in net.parameters()) == header_params - dropped_params == params


@pytest.mark.parametrize("class_name", ["VPPrecond", "VEPrecond"])
def test_vp_ve_wrappers_of_ddpmpp_have_the_same_layout(class_name: str) -> None:
    kwargs = dict(CONFIGS["cifar10-cond-vp"][0])
    del kwargs["model_type"]
    with torch.device("meta"):
        net = build_edm_module(class_name, kwargs)
    assert _digest(_layout(net)) == CONFIGS["cifar10-cond-vp"][4]


def test_released_file_sizes_in_millions() -> None:
    """The README's figures: 55.7M (DDPM++), 56.4M (NCSN++), 295.9M (ADM)."""
    assert round(CONFIGS["cifar10-uncond-vp"][5] / 1e6, 1) == 55.7
    assert round(CONFIGS["cifar10-uncond-ve"][5] / 1e6, 1) == 56.4
    assert round(CONFIGS["imagenet64-cond-adm"][5] / 1e6, 1) == 295.9


def test_build_edm_module_maps_names_and_rejects_unknown_ones() -> None:
    tiny = dict(img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1])
    tiny_song = dict(tiny, num_blocks=1, attn_resolutions=[])
    assert isinstance(
        build_edm_module("EDMPrecond", dict(tiny_song, model_type="SongUNet")), EDMPrecond
    )
    assert isinstance(build_edm_module("training.networks.VPPrecond", tiny_song), VPPrecond)
    assert isinstance(build_edm_module("VEPrecond", tiny_song), VEPrecond)
    raw = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8, channel_mult=[1])
    assert isinstance(build_edm_module("training.networks.SongUNet", raw), SongUNet)
    assert isinstance(build_edm_module("DhariwalUNet", raw), DhariwalUNet)
    for bad_name in ("iDDPMPrecond", "training.networks.Linear", "os.system", ""):
        with pytest.raises(UserError) as info:
            build_edm_module(bad_name, {})
        assert "\n" not in str(info.value)
    with pytest.raises(UserError):
        build_edm_module("EDMPrecond", dict(tiny, model_type="StyleGAN"))
    with pytest.raises(UserError):
        build_edm_module("SongUNet", dict(raw, no_such_option=1))
    with pytest.raises(UserError):
        build_edm_module("SongUNet", dict(raw, embedding_type="learned"))


# --------------------------------------------------------------------------------------------
# Preconditioning (EDM Table 1, DESIGN.md section 1).

SIGMAS = torch.tensor([0.002, 0.01, 0.1, 0.5, 1.0, 3.0, 20.0, 80.0], dtype=torch.float64)


def test_edm_coefficients_match_table_1() -> None:
    s, sd = SIGMAS, 0.5
    c = edm_coefficients(s, sigma_data=sd)
    torch.testing.assert_close(c.c_skip, sd**2 / (s**2 + sd**2))
    torch.testing.assert_close(c.c_out, s * sd / torch.sqrt(s**2 + sd**2))
    torch.testing.assert_close(c.c_in, 1 / torch.sqrt(s**2 + sd**2))
    torch.testing.assert_close(c.c_noise, torch.log(s) / 4)
    # EDM's derivation (App. B.6) gives c_out² = σ_d²(1 − c_skip): c_skip + (c_out/σ_d)² = 1.
    torch.testing.assert_close(c.c_skip + (c.c_out / sd) ** 2, torch.ones_like(s))
    # The network input c_in·(y + σn) has unit variance when Var y = σ_d².
    torch.testing.assert_close(c.c_in**2 * (sd**2 + s**2), torch.ones_like(s))


def test_vp_time_inverts_vp_sigma() -> None:
    t = torch.linspace(1e-5, 1.0, 101, dtype=torch.float64)
    for beta_d, beta_min in [(19.9, 0.1), (10.0, 0.5)]:
        sigma = vp_sigma(t, beta_d, beta_min)
        closed = torch.sqrt(torch.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)
        torch.testing.assert_close(sigma, closed, rtol=1e-9, atol=0)  # expm1 beats exp − 1
        torch.testing.assert_close(vp_sigma_inv(sigma, beta_d, beta_min), t, rtol=1e-10, atol=0)
    torch.testing.assert_close(vp_sigma(vp_sigma_inv(SIGMAS)), SIGMAS, rtol=1e-10, atol=0)


def test_vp_and_ve_coefficients_match_table_1() -> None:
    s = SIGMAS
    vp = vp_coefficients(s, beta_d=19.9, beta_min=0.1, M=1000)
    torch.testing.assert_close(vp.c_skip, torch.ones_like(s))
    torch.testing.assert_close(vp.c_out, -s)
    torch.testing.assert_close(vp.c_in, 1 / torch.sqrt(s**2 + 1))
    torch.testing.assert_close(vp.c_noise, 999 * vp_sigma_inv(s, 19.9, 0.1))
    ve = ve_coefficients(s)
    torch.testing.assert_close(ve.c_skip, torch.ones_like(s))
    torch.testing.assert_close(ve.c_out, s)
    torch.testing.assert_close(ve.c_in, torch.ones_like(s))
    torch.testing.assert_close(ve.c_noise, torch.log(s / 2))


class _Probe(nn.Module):
    """A stand-in raw network F(x, c) = tanh(x) + c that records its inputs."""

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen = (x, noise_labels, class_labels)
        return torch.tanh(x) + noise_labels.reshape(-1, 1, 1, 1)


_TINY = dict(model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])


@pytest.mark.parametrize(
    ("cls", "kwargs", "coefficients"),
    [
        (EDMPrecond, dict(sigma_data=0.5), lambda s: edm_coefficients(s, 0.5)),
        (VPPrecond, dict(beta_d=19.9, beta_min=0.1, M=1000), vp_coefficients),
        (VEPrecond, dict(), ve_coefficients),
    ],
)
def test_precond_forward_is_c_skip_x_plus_c_out_F(cls, kwargs, coefficients) -> None:
    torch.manual_seed(0)
    net = cls(
        img_resolution=8, img_channels=3, label_dim=4, model_type="SongUNet", **_TINY, **kwargs
    )
    assert isinstance(net.model, SongUNet)
    net.model = _Probe()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.01, 1.0, 40.0], dtype=torch.float64)
    c = coefficients(sigma)
    D = net(x, sigma)
    x_in, noise_in, labels_in = net.model.seen
    torch.testing.assert_close(x_in, c.c_in.reshape(-1, 1, 1, 1) * x)
    torch.testing.assert_close(noise_in, c.c_noise)
    torch.testing.assert_close(labels_in, torch.zeros(3, 4, dtype=torch.float64))
    F_x = torch.tanh(x_in) + c.c_noise.reshape(-1, 1, 1, 1)
    expected = c.c_skip.reshape(-1, 1, 1, 1) * x + c.c_out.reshape(-1, 1, 1, 1) * F_x
    torch.testing.assert_close(D, expected)
    # A scalar sigma is broadcast over the batch.
    torch.testing.assert_close(net(x, 1.0), net(x, torch.ones(3, dtype=torch.float64)))
    assert net.round_sigma(0.3).item() == pytest.approx(0.3)
    # Float32 inputs are computed in float32, as in EDM.
    assert net(x.float(), sigma.float()).dtype == torch.float32


def test_vp_precond_noise_range() -> None:
    net = VPPrecond(img_resolution=8, img_channels=3, **_TINY)
    assert net.sigma_min == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9e-10 + 0.1e-5)))
    assert net.sigma_max == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 + 0.1)))
    assert float(net.sigma_inv(net.sigma(0.3))) == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------
# Small networks: forward, attention layout, resampling, forward-mode AD.


def _small(kind: str) -> nn.Module:
    base = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=4, dropout=0.0)
    song = dict(base, augment_dim=2, model_channels=16, channel_mult=[1, 2], num_blocks=1)
    if kind == "ddpmpp":
        net = SongUNet(**song, attn_resolutions=[4])
    elif kind == "ncsnpp":
        net = SongUNet(
            **song,
            attn_resolutions=[8],
            embedding_type="fourier",
            channel_mult_noise=2,
            encoder_type="residual",
            resample_filter=[1, 3, 3, 1],
        )
    elif kind == "skip":
        net = SongUNet(**song, attn_resolutions=[], encoder_type="skip", decoder_type="skip")
    elif kind == "adm":  # 64 channels per head: one head at 4x4
        net = DhariwalUNet(
            **base,
            augment_dim=3,
            model_channels=32,
            channel_mult=[2, 2],
            num_blocks=1,
            attn_resolutions=[4],
        )
    else:
        raise ValueError(kind)
    # Replace the (partly zero) initialisation so every path carries signal.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            std = 1.0 / math.sqrt(fan_in) if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if p.dim() == 1 else 0.0))
    return net.eval()


def _inputs(net: nn.Module, batch: int = 2, dtype=torch.float32):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, 8, 8, generator=gen, dtype=dtype)
    noise = torch.randn(batch, generator=gen, dtype=dtype)
    labels = F.one_hot(torch.arange(batch) % 4, 4).to(dtype)
    augment_dim = net.map_augment.in_features if net.map_augment is not None else 0
    augment = torch.randn(batch, augment_dim, generator=gen, dtype=dtype)
    return x, noise, labels, augment


KINDS = ["ddpmpp", "ncsnpp", "skip", "adm"]


@pytest.mark.parametrize("kind", KINDS)
def test_small_network_forward_shape(kind: str) -> None:
    net = _small(kind)
    x, noise, labels, augment = _inputs(net, batch=3)
    with torch.no_grad():
        out = net(x, noise, labels, augment)
    assert out.shape == (3, 3, 8, 8)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["ddpmpp", "adm"])
def test_class_labels_change_output_and_missing_augment_is_zero(kind: str) -> None:
    net = _small(kind)
    x, noise, labels, augment = _inputs(net)
    with torch.no_grad():
        out = net(x, noise, labels)
        other = net(x, noise, labels.roll(1, dims=1))
        zeros = net(x, noise, labels, torch.zeros_like(augment))
        augmented = net(x, noise, labels, augment)
    assert (out - other).abs().max() > 1e-3
    torch.testing.assert_close(out, zeros, rtol=0, atol=0)
    assert (out - augmented).abs().max() > 1e-3


def test_precond_without_class_labels_equals_zero_labels() -> None:
    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=8, img_channels=3, label_dim=4, model_type="SongUNet", **_TINY)
    x = torch.randn(2, 3, 8, 8)
    sigma = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma), net(x, sigma, torch.zeros(2, 4)))
        assert (net(x, sigma) - net(x, sigma, torch.eye(4)[:2])).abs().max() > 0


def test_attention_uses_qkv_weights_in_checkpoint_layout() -> None:
    """qkv channels are grouped (head, channel, q|k|v); w = softmax(qᵀk/√d) over keys."""
    torch.manual_seed(0)
    heads, channels = 2, 16
    block = UNetBlock(channels, channels, emb_channels=4, attention=True, num_heads=heads)
    h = torch.randn(3, channels, 4, 4, dtype=torch.float64)
    block = block.double()
    qkv = block.qkv(h).reshape(3 * heads, channels // heads, 3, 16)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B*heads, d, pixels)
    w = torch.softmax(torch.einsum("ndq,ndk->nqk", q, k) / math.sqrt(channels // heads), dim=2)
    expected = torch.einsum("nqk,ndk->ndq", w, v).reshape(3, channels, 4, 4)
    torch.testing.assert_close(block._attention(h), expected)


def test_resampling_filters() -> None:
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    box = dict(kernel=0, resample_filter=[1, 1])
    down = Conv2d(5, 5, down=True, **box).double()
    up = Conv2d(5, 5, up=True, **box).double()
    assert dict(down.named_parameters()) == {}
    assert down.resample_filter.shape == (1, 1, 2, 2)
    torch.testing.assert_close(down(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    # [1,3,3,1] is a normalised low-pass: constants survive away from the zero-padded border.
    smooth = Conv2d(5, 5, kernel=0, down=True, resample_filter=[1, 3, 3, 1]).double()
    ones = torch.ones(1, 5, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(smooth(ones)[..., 1:-1, 1:-1], torch.ones(1, 5, 2, 2).double())
    upsampler = Conv2d(5, 7, kernel=3, up=True, resample_filter=[1, 3, 3, 1])
    assert upsampler(x.float()).shape == (2, 7, 16, 16)
    fused = Conv2d(5, 7, kernel=3, down=True, resample_filter=[1, 3, 3, 1], fused_resample=True)
    assert fused(x.float()).shape == (2, 7, 4, 4)


def test_positional_embedding_frequencies() -> None:
    emb = PositionalEmbedding(num_channels=8, max_positions=10000, endpoint=True)
    out = emb(torch.tensor([1.0], dtype=torch.float64))
    freqs = torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4], dtype=torch.float64)
    torch.testing.assert_close(out[0], torch.cat([freqs.cos(), freqs.sin()]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", ["ddpmpp", "ncsnpp", "adm"])
def test_jvp_in_noise_label_matches_finite_difference_and_backpropagates(kind: str) -> None:
    net = _small(kind).double()
    x, noise, labels, augment = _inputs(net, dtype=torch.float64)
    if kind == "ncsnpp":
        noise = noise * 0.05  # Fourier features of scale 16 oscillate fast; keep FD accurate

    def f(c):
        return net(x, c, labels, augment)

    with sdpa_kernel(SDPBackend.MATH):
        out, tangent = torch.func.jvp(f, (noise,), (torch.ones_like(noise),))
        h = 1e-6
        with torch.no_grad():
            fd = (f(noise + h) - f(noise - h)) / (2 * h)
            torch.testing.assert_close(out, f(noise))
        scale = fd.abs().max()
        assert scale > 1e-3
        torch.testing.assert_close(tangent, fd, rtol=0, atol=1e-6 * scale)
        tangent.square().mean().backward()
    # d(output)/d(noise label) cannot depend on the final bias; every other parameter counts.
    final_bias = "out_conv.bias" if kind == "adm" else "dec.8x8_aux_conv.bias"
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == [final_bias]
