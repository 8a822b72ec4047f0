"""EDM teacher U-Nets (Karras et al. 2022, App. F.2): DDPM++/NCSN++ and ADM, checkpoint-compatible.

The networks are written for this project from the papers and the published checkpoint
layouts: DDPM++ and NCSN++ (Song et al., "Score-Based Generative Modeling through SDEs",
ICLR 2021) and ADM (Dhariwal & Nichol, "Diffusion Models Beat GANs", NeurIPS 2021), in the
variants EDM trained. Module names, parameter shapes and constructor keywords follow NVIDIA's
released EDM checkpoints (whose weights are CC BY-NC-SA 4.0) so that their state dicts load
key for key. Attention runs through ``torch.nn.functional.scaled_dot_product_attention``;
for forward-mode AD (``torch.func.jvp``) select the math backend with
``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "Conv2d",
    "DhariwalUNet",
    "FourierEmbedding",
    "GroupNorm",
    "Linear",
    "NETWORKS",
    "PositionalEmbedding",
    "SongUNet",
    "UNetBlock",
    "weight_init",
]

# Fan-based scale of each initialisation scheme (Glorot & Bengio 2010; He et al. 2015).
_INIT_SCALE = {
    "xavier_uniform": lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out)),
    "xavier_normal": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
    "kaiming_uniform": lambda fan_in, fan_out: math.sqrt(3.0 / fan_in),
    "kaiming_normal": lambda fan_in, fan_out: math.sqrt(1.0 / fan_in),
}


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> Tensor:
    """Random tensor of the given shape: Glorot/He scale times U(-1, 1) or N(0, 1)."""
    if mode not in _INIT_SCALE:
        raise ValueError(f"unknown init mode {mode!r}; expected one of {sorted(_INIT_SCALE)}")
    scale = _INIT_SCALE[mode](fan_in, fan_out)
    if mode.endswith("_uniform"):
        return (torch.rand(*shape) * 2 - 1) * scale
    return torch.randn(*shape) * scale


def _separable_filter(taps: Sequence[float]) -> Tensor:
    """2-D resampling kernel f fᵀ / (Σf)², shaped (1, 1, k, k), from 1-D taps f."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    return (torch.outer(f, f) / f.sum().square()).reshape(1, 1, len(taps), len(taps))


def _upsample2x(x: Tensor, f: Tensor, padding: int) -> Tensor:
    """Zero-stuff by 2 and low-pass with 4·f per channel (a transposed depthwise convolution)."""
    channels = x.shape[1]
    return F.conv_transpose2d(
        x, (f * 4).repeat(channels, 1, 1, 1), stride=2, padding=padding, groups=channels
    )


def _downsample2x(x: Tensor, f: Tensor, padding: int) -> Tensor:
    """Low-pass with f per channel and keep every second pixel (a strided depthwise convolution)."""
    channels = x.shape[1]
    return F.conv2d(x, f.repeat(channels, 1, 1, 1), stride=2, padding=padding, groups=channels)


class Linear(nn.Module):
    """Fully connected layer y = x Wᵀ + b with EDM's initialisation schemes."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        if bias:
            self.bias = nn.Parameter(weight_init([out_features], **fans) * init_bias)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class Conv2d(nn.Module):
    """Square convolution with optional 2x FIR up/downsampling (Zhang 2019; Karras et al. 2020).

    ``kernel=0`` gives a pure resampler (no weight). The filter ``resample_filter`` is stored as
    a buffer only when the layer resamples, as in the EDM checkpoints. With
    ``fused_resample`` a downsampling layer convolves first and then filters and decimates
    (NCSN++'s residual encoder); upsampling is always filter-then-convolve.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        fused_resample: bool = False,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(
            mode=init_mode,
            fan_in=in_channels * kernel * kernel,
            fan_out=out_channels * kernel * kernel,
        )
        if kernel:
            shape = [out_channels, in_channels, kernel, kernel]
            self.weight = nn.Parameter(weight_init(shape, **fans) * init_weight)
        else:
            self.register_parameter("weight", None)
        if kernel and bias:
            self.bias = nn.Parameter(weight_init([out_channels], **fans) * init_bias)
        else:
            self.register_parameter("bias", None)
        filt = _separable_filter(resample_filter) if (up or down) else None
        self.register_buffer("resample_filter", filt)

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.down and self.fused_resample and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = _downsample2x(x, f, padding=0)
        else:
            if self.up:
                x = _upsample2x(x, f, padding=f_pad)
            if self.down:
                x = _downsample2x(x, f, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018) with min(32, C/4) groups, as in DDPM++ and ADM."""

    def __init__(
        self,
        num_channels: int,
        num_groups: int = 32,
        min_channels_per_group: int = 4,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_groups = max(1, min(num_groups, num_channels // min_channels_per_group))
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        # contiguous(): group_norm's forward-mode AD rule cannot take strided (e.g. NHWC) inputs.
        return F.group_norm(
            x.contiguous(),
            self.num_groups,
            self.weight.to(x.dtype),
            self.bias.to(x.dtype),
            self.eps,
        )


class UNetBlock(nn.Module):
    """Residual block + optional self-attention, the union of DDPM++/NCSN++/ADM (EDM App. F.2).

    out = s·(conv1(drop(act(norm1(conv0(act(norm0(x)))) ⊙ emb))) + skip(x)), then, with
    attention, out = s·(proj(attn(norm2(out))) + out), where s = ``skip_scale`` and the
    embedding enters as a bias (``adaptive_scale=False``) or as scale and shift (ADM).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[float] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
        init: dict | None = None,
        init_zero: dict | None = None,
        init_attn: dict | None = None,
    ) -> None:
        super().__init__()
        init = {} if init is None else dict(init)
        init_zero = {"init_weight": 0} if init_zero is None else dict(init_zero)
        init_attn = init if init_attn is None else dict(init_attn)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        elif num_heads is not None:
            self.num_heads = num_heads
        else:
            self.num_heads = out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        resample = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resample, **init)
        affine_out = out_channels * 2 if adaptive_scale else out_channels
        self.affine = Linear(in_features=emb_channels, out_features=affine_out, **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)

        if in_channels != out_channels or up or down:
            # A 1x1 projection when the width changes (or when asked to); else resampling only.
            kernel = 1 if (resample_proj or in_channels != out_channels) else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, **resample, **init)
        else:
            self.skip = None

        if self.num_heads:
            if out_channels % self.num_heads:
                raise ValueError(
                    f"{out_channels} channels do not split into {self.num_heads} heads"
                )
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def _attention(self, h: Tensor) -> Tensor:
        """Multi-head softmax(q kᵀ/√d) v over pixels; qkv channels are laid out (head, c, q|k|v)."""
        height = h.shape[2]
        q, k, v = rearrange(
            self.qkv(h), "b (n c s) x y -> s b n (x y) c", n=self.num_heads, s=3
        ).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        return rearrange(a, "b n (x y) c -> b (n c) x y", x=height).contiguous()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb).to(h.dtype)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        residual = x if self.skip is None else self.skip(x)
        x = (h + residual) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attention(self.norm2(x))) + x) * self.skip_scale
        return x


class BlockDropout:
    """``set_dropout(p)``: the dropout rate of every ``UNetBlock`` of a network."""

    def set_dropout(self, p: float) -> None:
        for m in self.modules():
            if isinstance(m, UNetBlock):
                m.dropout = p


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding [cos(ω_i c), sin(ω_i c)], ω_i = P^(-i/n) (Vaswani et al. 2017)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: Tensor) -> Tensor:
        half = self.num_channels // 2
        exponent = torch.arange(half, dtype=torch.float32, device=x.device)
        exponent = exponent / (half - 1 if self.endpoint else half)
        freqs = (1.0 / self.max_positions) ** exponent
        angles = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2πωc), sin(2πωc)], ω ~ N(0, scale²) (Tancik et al. 2020)."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angles = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def _class_embedding_input(class_labels: Tensor | None, label_dim: int, like: Tensor) -> Tensor:
    """One-hot class labels (B, label_dim); None stands for the all-zero (unconditional) row."""
    if class_labels is None:
        return torch.zeros(like.shape[0], label_dim, dtype=like.dtype, device=like.device)
    return class_labels.to(like.dtype).reshape(-1, label_dim)


def _drop_labels(labels: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole label rows with probability p while training (classifier-free guidance)."""
    if not (training and p):
        return labels
    keep = torch.rand(labels.shape[0], 1, device=labels.device) >= p
    return labels * keep.to(labels.dtype)


class SecondTime(nn.Module):
    """A flow map's source-time input (odedistill's, not in EDM): c_noise(s) embedded as the
    network embeds its time, through two layers, the last starting at zero. Its output is added
    to the time embedding, so at initialisation the network computes exactly what EDM's does."""

    def __init__(self, embedding: nn.Module, noise_channels: int, emb_channels: int) -> None:
        super().__init__()
        self.map_noise = embedding
        self.map_layer0 = Linear(noise_channels, emb_channels, init_mode="xavier_uniform")
        self.map_layer1 = Linear(
            emb_channels, emb_channels, init_mode="xavier_uniform", init_weight=0, init_bias=0
        )

    def forward(self, noise_labels_s: Tensor | None, flip: bool) -> Tensor:
        if noise_labels_s is None:
            raise ValueError("this network takes two times: pass noise_labels_s")
        emb = self.map_noise(noise_labels_s)
        if flip:
            half = emb.shape[1] // 2
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=1)
        return self.map_layer1(F.silu(self.map_layer0(emb)))


class SongUNet(BlockDropout, nn.Module):
    """DDPM++ / NCSN++ U-Net (Song et al. 2021) as configured in EDM (Karras et al. 2022, App. F.2).

    DDPM++: ``embedding_type='positional'``, ``channel_mult_noise=1``, ``encoder_type='standard'``,
    ``resample_filter=[1,1]``. NCSN++: ``'fourier'``, ``2``, ``'residual'``, ``[1,3,3,1]``.
    ``two_times`` (not in EDM) adds a flow map's source-time branch; see ``SecondTime``.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[float] = (1, 1),
        two_times: bool = False,
    ) -> None:
        if embedding_type not in ("positional", "fourier"):
            raise ValueError(
                f"embedding_type must be 'positional' or 'fourier', not {embedding_type!r}"
            )
        if encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(
                f"encoder_type must be 'standard', 'skip' or 'residual', not {encoder_type!r}"
            )
        if decoder_type not in ("standard", "skip"):
            raise ValueError(f"decoder_type must be 'standard' or 'skip', not {decoder_type!r}")
        super().__init__()
        self.img_resolution = img_resolution
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
            init=init,
            init_zero=init_zero,
            init_attn=init_attn,
        )

        # Mapping network: noise level (+ class, + augmentation) -> embedding.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = (
            Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        )
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder and decoder. `_enc_roles`/`_dec_roles` tell forward() what each entry does.
        self.enc = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        self._enc_roles: dict[str, str] = {}
        self._dec_roles: dict[str, str] = {}

        def add_enc(name: str, role: str, module: nn.Module) -> None:
            self.enc[name] = module
            self._enc_roles[name] = role

        def add_dec(name: str, role: str, module: nn.Module) -> None:
            self.dec[name] = module
            self._dec_roles[name] = role

        def resampler(channels: int, **direction: bool) -> Conv2d:
            return Conv2d(
                channels, channels, kernel=0, resample_filter=resample_filter, **direction
            )

        fused = dict(fused_resample=True)
        width = model_channels  # channels of the main path
        aux_width = in_channels  # channels of the auxiliary image path (skip/residual encoders)
        skip_widths: list[int] = []  # widths of the activations the decoder will concatenate
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                add_enc(f"{res}x{res}_conv", "conv", Conv2d(in_channels, width, 3, **init))
            else:
                add_enc(f"{res}x{res}_down", "block", UNetBlock(width, width, down=True, **block))
            skip_widths.append(width)
            if level > 0 and encoder_type == "skip":
                add_enc(f"{res}x{res}_aux_down", "aux_down", resampler(aux_width, down=True))
                skip_conv = Conv2d(aux_width, width, kernel=1, **init)
                add_enc(f"{res}x{res}_aux_skip", "aux_skip", skip_conv)
            if level > 0 and encoder_type == "residual":
                residual_conv = Conv2d(
                    aux_width, width, 3, down=True, resample_filter=resample_filter, **fused, **init
                )
                add_enc(f"{res}x{res}_aux_residual", "aux_residual", residual_conv)
                aux_width = width
            for idx in range(num_blocks):
                cin, width = width, model_channels * mult
                attn = res in attn_resolutions
                add_enc(
                    f"{res}x{res}_block{idx}",
                    "block",
                    UNetBlock(cin, width, attention=attn, **block),
                )
                skip_widths.append(width)

        # The decoder mirrors the encoder; each `_block{idx}` concatenates one encoder activation.
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                add_dec(
                    f"{res}x{res}_in0", "block", UNetBlock(width, width, attention=True, **block)
                )
                add_dec(f"{res}x{res}_in1", "block", UNetBlock(width, width, **block))
            else:
                add_dec(f"{res}x{res}_up", "block", UNetBlock(width, width, up=True, **block))
            for idx in range(num_blocks + 1):
                cin, width = width + skip_widths.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                add_dec(
                    f"{res}x{res}_block{idx}",
                    "block_cat",
                    UNetBlock(cin, width, attention=attn, **block),
                )
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    add_dec(f"{res}x{res}_aux_up", "aux_up", resampler(out_channels, up=True))
                add_dec(f"{res}x{res}_aux_norm", "aux_norm", GroupNorm(width, eps=1e-6))
                out_conv = Conv2d(width, out_channels, kernel=3, **init_zero)
                add_dec(f"{res}x{res}_aux_conv", "aux_conv", out_conv)
        self.second_time = None
        if two_times:
            embed = (
                PositionalEmbedding(num_channels=noise_channels, endpoint=True)
                if embedding_type == "positional"
                else FourierEmbedding(num_channels=noise_channels)
            )
            self.second_time = SecondTime(embed, noise_channels, emb_channels)

    def _embedding(
        self,
        noise_labels: Tensor,
        class_labels: Tensor | None,
        augment_labels: Tensor | None,
        noise_labels_s: Tensor | None = None,
    ) -> Tensor:
        emb = self.map_noise(noise_labels)
        half = emb.shape[1] // 2
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=1)  # [sin, cos] order
        if self.map_label is not None:
            labels = _class_embedding_input(class_labels, self.label_dim, emb)
            labels = _drop_labels(labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.second_time is not None:
            emb = emb + self.second_time(noise_labels_s, flip=True)
        return F.silu(emb)

    def forward(
        self,
        x: Tensor,
        noise_labels: Tensor,
        class_labels: Tensor | None = None,
        augment_labels: Tensor | None = None,
        noise_labels_s: Tensor | None = None,
    ) -> Tensor:
        """F(x; c_noise, class) for x (B, C, H, W), noise_labels (B,) and one-hot class_labels."""
        emb = self._embedding(noise_labels, class_labels, augment_labels, noise_labels_s)

        skips: list[Tensor] = []
        aux = x
        for name, layer in self.enc.items():
            role = self._enc_roles[name]
            if role == "aux_down":
                aux = layer(aux)
            elif role == "aux_skip":
                x = x + layer(aux)
                skips[-1] = x
            elif role == "aux_residual":
                x = (x + layer(aux)) / math.sqrt(2)
                skips[-1] = aux = x
            else:
                x = layer(x) if role == "conv" else layer(x, emb)
                skips.append(x)

        out = None
        head = None
        for name, layer in self.dec.items():
            role = self._dec_roles[name]
            if role == "aux_up":
                out = layer(out)
            elif role == "aux_norm":
                head = layer(x)
            elif role == "aux_conv":
                head = layer(F.silu(head))
                out = head if out is None else head + out
            else:
                if role == "block_cat":
                    x = torch.cat([x, skips.pop()], dim=1)
                x = layer(x, emb)
        return out


class DhariwalUNet(BlockDropout, nn.Module):
    """ADM U-Net (Dhariwal & Nichol 2021) as reimplemented in EDM (Karras et al. 2022, App. F.2).

    ``two_times`` (not in EDM) adds a flow map's source-time branch; see ``SecondTime``.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        two_times: bool = False,
    ) -> None:
        super().__init__()
        self.img_resolution = img_resolution
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        gain = math.sqrt(1 / 3)
        init = dict(init_mode="kaiming_uniform", init_weight=gain, init_bias=gain)
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(
            emb_channels=emb_channels,
            channels_per_head=64,
            dropout=dropout,
            init=init,
            init_zero=init_zero,
        )

        # Mapping network.
        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = (
            Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        )
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (
            Linear(
                label_dim,
                emb_channels,
                bias=False,
                init_mode="kaiming_normal",
                init_weight=math.sqrt(label_dim),
            )
            if label_dim
            else None
        )

        # Encoder: every entry's output is kept for the decoder.
        self.enc = nn.ModuleDict()
        skip_widths: list[int] = []
        width = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, width = width, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, width, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(width, width, down=True, **block)
            skip_widths.append(width)
            for idx in range(num_blocks):
                cin, width = width, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    cin, width, attention=res in attn_resolutions, **block
                )
                skip_widths.append(width)

        # Decoder: `_block{idx}` entries concatenate one encoder activation.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(width, width, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(width, width, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(width, width, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, width = width + skip_widths.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    cin, width, attention=res in attn_resolutions, **block
                )
        self.out_norm = GroupNorm(num_channels=width)
        self.out_conv = Conv2d(width, out_channels, kernel=3, **init_zero)
        self.second_time = (
            SecondTime(
                PositionalEmbedding(num_channels=model_channels), model_channels, emb_channels
            )
            if two_times
            else None
        )

    def _embedding(
        self,
        noise_labels: Tensor,
        class_labels: Tensor | None,
        augment_labels: Tensor | None,
        noise_labels_s: Tensor | None = None,
    ) -> Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.second_time is not None:
            emb = emb + self.second_time(noise_labels_s, flip=False)
        if self.map_label is not None:
            labels = _class_embedding_input(class_labels, self.label_dim, emb)
            emb = emb + self.map_label(_drop_labels(labels, self.label_dropout, self.training))
        return F.silu(emb)

    def forward(
        self,
        x: Tensor,
        noise_labels: Tensor,
        class_labels: Tensor | None = None,
        augment_labels: Tensor | None = None,
        noise_labels_s: Tensor | None = None,
    ) -> Tensor:
        """F(x; c_noise, class) for x (B, C, H, W), noise_labels (B,) and one-hot class_labels."""
        emb = self._embedding(noise_labels, class_labels, augment_labels, noise_labels_s)
        skips: list[Tensor] = []
        for layer in self.enc.values():
            x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
            skips.append(x)
        for name, layer in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


NETWORKS: dict[str, type[nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
"""Raw EDM networks by the class name stored in EDM pickles."""
