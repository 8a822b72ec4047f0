"""FID (EDM's fid.py): closed forms for Gaussians, the detector path, reference files, the CLI."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from odedistill.errors import UserError
from odedistill.evaluation.datasets import ArrayDataset
from odedistill.evaluation.features import compute_feature_stats, dataset_feature_stats
from odedistill.evaluation.fid import (
    DETECTOR_URL,
    FeatureStats,
    detector_features,
    feature_stats,
    fid_from_stats,
    load_detector,
    load_ref,
    save_ref,
)
from odedistill.infra.pictures import to_uint8
from tests.conftest import invoke

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Independent float64 references.


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_by_eigh(mu1, s1, mu2, s2) -> float:
    """tr sqrt(Σ₁Σ₂) = Σ √λ(Σ₁^½ Σ₂ Σ₁^½): a symmetric eigenproblem, no sqrtm."""
    r = _sqrt_psd(s1)
    lam = np.linalg.eigvalsh(r @ s2 @ r)
    trace_sqrt = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    m = rng.normal(size=(d, d))
    return m @ m.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------------------------
# The formula.


def test_fid_of_a_set_against_its_own_statistics_is_zero():
    rng = np.random.default_rng(0)
    features = rng.gamma(2.0, size=(500, 16)) @ rng.normal(size=(16, 16))  # skewed, correlated
    mu, sigma = feature_stats(features)
    fid = fid_from_stats(mu, sigma, mu, sigma)
    assert isinstance(fid, float)
    assert abs(fid) < 1e-9 * np.trace(sigma)


def test_fid_of_diagonal_covariances_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.5, -1.0])
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 0.01])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_of_commuting_covariances_is_the_closed_form():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T  # same eigenvectors: sqrtm(Σ₁Σ₂) = Q √(ab) Qᵀ
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("d", [2, 10, 64])
def test_fid_of_random_spd_covariances_matches_the_eigendecomposition(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    expected = fid_by_eigh(mu1, s1, mu2, s2)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert fid_from_stats(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)  # symmetric


def test_fid_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    d, n = 3, 200_000
    mu1, mu2 = np.array([0.0, 0.5, -0.5]), np.array([1.0, 0.0, 0.0])
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    x1 = rng.multivariate_normal(mu1, s1, size=n)
    x2 = rng.multivariate_normal(mu2, s2, size=n)
    expected = fid_by_eigh(mu1, s1, mu2, s2)
    assert fid_from_stats(*feature_stats(x1), *feature_stats(x2)) == pytest.approx(
        expected, abs=0.03
    )


def test_fid_of_singular_covariances_is_real_and_finite():
    # Fewer images than features gives a singular Σ, as with < 2048 images and Inception.
    fid = fid_from_stats(np.zeros(2), np.diag([1.0, 0.0]), np.ones(2), np.diag([0.0, 1.0]))
    assert fid == pytest.approx(4.0, abs=1e-9)


def test_fid_rejects_statistics_of_different_dimensions():
    with pytest.raises(UserError, match="same detector"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UserError, match=r"\(D, D\)"):
        fid_from_stats(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


def test_feature_stats_are_float64_mean_and_unbiased_covariance():
    rng = np.random.default_rng(3)
    features = (rng.normal(size=(300, 8)) * 3 + 1).astype(np.float32)
    mu, sigma = feature_stats(features)
    ref = features.astype(np.float64)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False, ddof=1), rtol=1e-10, atol=1e-12)


def test_feature_stats_streamed_in_batches_equal_one_pass():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(101, 5))
    stats = FeatureStats()
    for chunk in np.array_split(features, 7):
        stats.update(torch.from_numpy(chunk))
    mu, sigma = stats.mu_sigma()
    mu1, sigma1 = feature_stats(features)
    assert stats.num == 101
    np.testing.assert_allclose(mu, mu1, rtol=1e-13)
    np.testing.assert_allclose(sigma, sigma1, rtol=1e-11, atol=1e-13)


def test_feature_stats_need_two_samples():
    with pytest.raises(UserError, match="at least 2"):
        feature_stats(np.ones((1, 4)))


def test_to_uint8_clips_and_truncates_as_edm_saves_images():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0])
    # x·127.5 + 128 = −63.25, 0.5, 0.63, 128, 191.75, 255.37, 255.5, 383 → clip → truncate
    expected = [0, 0, 0, 128, 191, 255, 255, 255]
    assert to_uint8(x).dtype == torch.uint8
    assert to_uint8(x).tolist() == expected


# ---------------------------------------------------------------------------------------------
# Reference files.


def test_save_ref_and_load_ref_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    mu, sigma = rng.normal(size=6), _random_spd(rng, 6)
    path = save_ref(tmp_path / "sub" / "ref.npz", mu, sigma)
    with np.load(path) as z:
        assert sorted(z.files) == ["mu", "sigma"]
        assert z["mu"].dtype == np.float64
    mu2, sigma2 = load_ref(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ref.npz"]  # no temporary left


def test_load_ref_accepts_float32_files_as_float64(tmp_path):
    np.savez(tmp_path / "r.npz", mu=np.ones(3, np.float32), sigma=np.eye(3, dtype=np.float32))
    mu, sigma = load_ref(tmp_path / "r.npz")
    assert mu.dtype == sigma.dtype == np.float64


def test_load_ref_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="not found.*fid-refs/cifar10-32x32.npz"):
        load_ref(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=np.ones(3))
    with pytest.raises(UserError, match="no 'mu' and 'sigma'"):
        load_ref(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=np.ones(3), sigma=np.eye(4))
    with pytest.raises(UserError, match="should be"):
        load_ref(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="is not an .npz file"):
        load_ref(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------
# The detector path, with a tiny TorchScript stand-in for inception-2015-12-05.pt.

FEATURES = 16


class TinyDetector(torch.nn.Module):
    """Same call as the real detector: uint8 NCHW in; features when return_features=True.

    Features: tanh(W · (2×2 mean pooling of x/255 down to 4×4) + b) for 8×8 RGB images.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8
        assert x.shape[1] == 3
        x = x.to(torch.float32) / 255.0
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4)
        features = torch.tanh(x.flatten(1) @ self.weight.T + self.bias)
        if return_features:
            return features
        return torch.softmax(features, dim=1)  # the real detector's default output: logits


def _detector_params(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(FEATURES, 48)) * 0.5, rng.normal(size=FEATURES) * 0.1


def make_tiny_detector(path: Path) -> Path:
    w, b = _detector_params()
    module = TinyDetector(
        torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    )
    with warnings.catch_warnings():  # TorchScript is deprecated; the real detector is one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def reference_features(images: np.ndarray) -> np.ndarray:
    """The tiny detector's features in float64 NumPy, from uint8 NCHW 8×8 RGB images."""
    w, b = _detector_params()
    x = images.astype(np.float64) / 255.0
    n = len(x)
    pooled = x.reshape(n, 3, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(n, 48)
    return np.tanh(pooled @ w.T + b)


def _images(seed: int, n: int, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=(n, 3, 8, 8), dtype=np.uint8)


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory) -> Path:
    return make_tiny_detector(tmp_path_factory.mktemp("detector") / "tiny-inception.pt")


def test_whole_path_matches_a_float64_numpy_reference(detector_path):
    a, b = _images(10, 80), _images(11, 70, lo=40, hi=256)  # two different distributions
    detector = load_detector(detector_path, "cpu")
    stats_a = dataset_feature_stats(ArrayDataset(a), detector, batch_size=9, progress=False)
    batches_b = (torch.from_numpy(b[i : i + 25]) for i in range(0, len(b), 25))
    stats_b = compute_feature_stats(batches_b, detector, batch_size=10, progress=False)
    assert (stats_a.num, stats_b.num) == (80, 70)
    mu_a, sigma_a = stats_a.mu_sigma()
    mu_b, sigma_b = stats_b.mu_sigma()

    fa, fb = reference_features(a), reference_features(b)
    ref_mu_a, ref_sigma_a = fa.mean(0), np.cov(fa, rowvar=False, ddof=1)
    ref_mu_b, ref_sigma_b = fb.mean(0), np.cov(fb, rowvar=False, ddof=1)
    np.testing.assert_allclose(mu_a, ref_mu_a, atol=1e-6)
    np.testing.assert_allclose(sigma_a, ref_sigma_a, atol=1e-6)
    expected = fid_by_eigh(ref_mu_a, ref_sigma_a, ref_mu_b, ref_sigma_b)
    assert expected > 0.05  # the sets differ
    assert fid_from_stats(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(expected, rel=1e-4)
    assert fid_from_stats(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0.0, abs=1e-9)


def test_detector_gets_grayscale_repeated_to_three_channels(detector_path):
    detector = load_detector(detector_path)
    grey = _images(12, 5)[:, :1]
    f1 = detector_features(detector, torch.from_numpy(grey))
    f3 = detector_features(detector, torch.from_numpy(grey.repeat(3, axis=1)))
    assert f1.dtype == torch.float64 and f1.shape == (5, FEATURES)
    torch.testing.assert_close(f1, f3, rtol=0, atol=0)
    np.testing.assert_allclose(f1.numpy(), reference_features(grey.repeat(3, axis=1)), atol=1e-6)


def test_detector_refuses_float_images(detector_path):
    detector = load_detector(detector_path)
    with pytest.raises(UserError, match="uint8"):
        detector_features(detector, torch.zeros(2, 3, 8, 8))


def test_load_detector_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as e:
        load_detector(tmp_path / "inception-2015-12-05.pt")
    assert DETECTOR_URL in str(e.value) and "\n" not in str(e.value)


def test_load_detector_refuses_pickles_and_junk(tmp_path):
    (tmp_path / "inception-2015-12-05.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(UserError, match="runs code"):
        load_detector(tmp_path / "inception-2015-12-05.pkl")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not a TorchScript"):
        load_detector(tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------
# The command line.


_cli = functools.partial(invoke, cwd=REPO)


def test_cli_fid_ref_then_fid_of_the_same_images_is_zero(tmp_path, detector_path):
    images = _images(20, 40)
    folder = tmp_path / "pngs"
    for i, image in enumerate(images):
        (folder / f"{i // 16:06d}").mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i // 16:06d}/{i:06d}.png")
    np.savez(tmp_path / "samples.npz", arr_0=images.transpose(0, 2, 3, 1))  # NHWC, as ADM

    ref = tmp_path / "ref.npz"
    made = _cli("fid-ref", str(folder), "--out", str(ref), "--detector", str(detector_path))
    assert made.returncode == 0, made.stderr
    mu, sigma = load_ref(ref)
    f = reference_features(images)
    np.testing.assert_allclose(mu, f.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), atol=1e-6)

    out = tmp_path / "fid.json"
    args = ["--ref", str(ref), "--detector", str(detector_path), "--out", str(out), "--quiet"]
    run = _cli("fid", str(tmp_path / "samples.npz"), *args)
    assert run.returncode == 0, run.stderr
    assert abs(float(run.stdout.split()[-1])) < 1e-6
    result = json.loads(out.read_text())
    assert abs(result["fid"]) < 1e-6 and result["num_images"] == 40

    fewer = _cli("fid", str(tmp_path / "samples.npz"), *args, "--num", "50")
    assert fewer.returncode == 2 and "found 40 images" in fewer.stderr


def test_cli_missing_detector_exits_2_with_one_line_and_writes_nothing(tmp_path):
    np.savez(tmp_path / "samples.npz", images=_images(21, 4))
    ref, out = tmp_path / "ref.npz", tmp_path / "fid.json"
    missing = str(tmp_path / "inception-2015-12-05.pt")
    run = _cli("fid-ref", str(tmp_path / "samples.npz"), "--out", str(ref), "--detector", missing)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error:")
    assert DETECTOR_URL in run.stderr
    assert not ref.exists()

    save_ref(ref, np.zeros(FEATURES), np.eye(FEATURES))
    run = _cli("fid", str(tmp_path / "samples.npz"), "--ref", str(ref), "--detector", missing,
               "--out", str(out))  # fmt: skip
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()
