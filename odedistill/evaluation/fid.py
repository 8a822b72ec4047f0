"""Fréchet Inception Distance as EDM's fid.py computes it: ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½)."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Final

import numpy as np
import torch

from odedistill._io import atomic_write
from odedistill.errors import UserError

DETECTOR_FILE: Final = "inception-2015-12-05.pt"
# The TorchScript translation of TensorFlow's inception-2015-12-05 (stylegan2-ada-pytorch).
DETECTOR_URL: Final = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt"
)
# The same network as EDM's fid.py downloads it: a pickle whose classes carry their source
# code, so loading it runs code. odedistill reads only the TorchScript file above.
EDM_DETECTOR_URL: Final = (
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/"
    "inception-2015-12-05.pkl"
)
FEATURE_DIM: Final = 2048  # the Inception pool3 features EDM uses
REF_URLS: Final = {
    "cifar10-32x32": "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz",
    "imagenet-64x64": "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/imagenet-64x64.npz",
}


# ---------------------------------------------------------------------------------------------
# Images and the detector.


def load_detector(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load the TorchScript Inception ``inception-2015-12-05.pt`` from a local file.

    Nothing is downloaded. The file is read with ``torch.jit.load``, which rebuilds a
    TorchScript archive without running Python code from it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Inception detector {path} not found; download {DETECTOR_FILE} from {DETECTOR_URL} "
            "and pass its path with --detector"
        )
    if path.suffix == ".pkl":
        raise UserError(
            f"{path} is the pickled detector (EDM's {EDM_DETECTOR_URL}), which runs code when "
            f"loaded; use the TorchScript {DETECTOR_FILE} from {DETECTOR_URL}"
        )
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is this file's format
            warnings.simplefilter("ignore", DeprecationWarning)
            detector = torch.jit.load(str(path), map_location=torch.device(device))
    except (RuntimeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is not a TorchScript detector ({first}); download {DETECTOR_FILE} "
            f"from {DETECTOR_URL}"
        ) from e
    return detector.eval()


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def detector_features(
    detector: torch.nn.Module, images: torch.Tensor, device: str | torch.device | None = None
) -> torch.Tensor:
    """Features of uint8 NCHW images at native size, as float64 (B, D).

    Called as EDM calls it: ``detector(images, return_features=True)`` on the uint8 tensor;
    one-channel images are repeated to three channels first.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise UserError(
            f"the detector takes uint8 NCHW images, got {images.dtype} {tuple(images.shape)}; "
            "convert images in [-1, 1] with clip(x * 127.5 + 128, 0, 255)"
        )
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    if images.shape[1] != 3:
        raise UserError(f"images have {images.shape[1]} channels; the detector takes 1 or 3")
    device = _module_device(detector) if device is None else torch.device(device)
    with torch.inference_mode():
        features = detector(images.to(device), return_features=True)
    return features.to(torch.float64)


# ---------------------------------------------------------------------------------------------
# Statistics.


class FeatureStats:
    """Running float64 sums of features f and f fᵀ, from which μ and Σ (divided by n−1) follow.

    This is the accumulation EDM's fid.py uses: Σ = (Σᵢ fᵢfᵢᵀ − n μμᵀ) / (n − 1).
    """

    def __init__(self) -> None:
        self.num = 0
        self._sum: torch.Tensor | None = None
        self._sum_outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> FeatureStats:
        """Add a (B, D) batch of features."""
        f = torch.as_tensor(features).to(torch.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (B, D), got {tuple(f.shape)}")
        if self._sum is None:
            self._sum = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
            self._sum_outer = torch.zeros(
                f.shape[1], f.shape[1], dtype=torch.float64, device=f.device
            )
        assert self._sum_outer is not None
        if f.shape[1] != self._sum.shape[0]:
            raise ValueError(f"features have {f.shape[1]} dimensions, earlier {self._sum.shape[0]}")
        self._sum += f.sum(0)
        self._sum_outer += f.T @ f
        self.num += f.shape[0]
        return self

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """The float64 mean (D,) and covariance (D, D), the covariance divided by n − 1."""
        if self.num < 2 or self._sum is None or self._sum_outer is None:
            raise UserError(f"found {self.num} images, but statistics need at least 2")
        mu = self._sum / self.num
        sigma = (self._sum_outer - torch.outer(mu, mu) * self.num) / (self.num - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()


def feature_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ and covariance Σ (divided by n − 1) of (n, D) features, in float64."""
    return FeatureStats().update(features).mu_sigma()


def _sqrtm(a: np.ndarray) -> np.ndarray:
    import scipy.linalg  # here, not at the top: every command that imports this module pays it

    with warnings.catch_warnings():  # EDM passes disp=False: no warning for singular products
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        result = scipy.linalg.sqrtm(a)
    return result[0] if isinstance(result, tuple) else result  # scipy < 1.16 with disp=False


def fid_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·sqrtm(Σ₁Σ₂)), the real part, in float64.

    ``scipy.linalg.sqrtm`` of the product, as EDM computes it; round-off can give the root a
    tiny imaginary part, which the real part of the total drops.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, mu, sigma in (("first", mu1, sigma1), ("second", mu2, sigma2)):
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise UserError(
                f"the {name} statistics have mu {mu.shape} and sigma {sigma.shape}; "
                "expected (D,) and (D, D)"
            )
    if mu2.shape[0] != d:
        raise UserError(
            f"statistics of {d} and {mu2.shape[0]} features do not compare; compute both with "
            f"the same detector ({DETECTOR_FILE} gives {FEATURE_DIM})"
        )
    m = np.square(mu1 - mu2).sum()
    s = _sqrtm(np.dot(sigma1, sigma2))
    fid = m + np.trace(sigma1 + sigma2 - s * 2)
    return float(np.real(fid))


# ---------------------------------------------------------------------------------------------
# Reference statistics files.


def load_ref(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read reference statistics (``mu``, ``sigma``) from an ``.npz`` as float64."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"reference statistics {path} not found; download EDM's "
            f"{REF_URLS['cifar10-32x32']} (or imagenet-64x64.npz beside it), "
            "or make one with `odedistill fid-ref`"
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise UserError(
            f"{path} is not an .npz file (reference statistics are a NumPy .npz with 'mu' and "
            "'sigma'); give EDM's reference .npz or make one with `odedistill fid-ref`"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"{path} is not a readable .npz ({first}); download or rebuild it"
        ) from None
    if "mu" not in arrays or "sigma" not in arrays:
        raise UserError(f"{path} has no 'mu' and 'sigma' arrays (found {sorted(arrays)})")
    if arrays["mu"].dtype.kind not in "iuf" or arrays["sigma"].dtype.kind not in "iuf":
        raise UserError(
            f"{path}: 'mu' and 'sigma' must be numbers, not {arrays['mu'].dtype} and "
            f"{arrays['sigma'].dtype}; download or rebuild it"
        )
    mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} should be (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path} holds NaN or Inf statistics; rebuild it")
    return mu, sigma


def save_ref(path: str | os.PathLike[str], mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write ``mu`` and ``sigma`` (float64) to an ``.npz`` atomically."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"mu {mu.shape} and sigma {sigma.shape} should be (D,) and (D, D)")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)

    return atomic_write(path, write)
