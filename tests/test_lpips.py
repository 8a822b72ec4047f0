"""The two LPIPS distances: without their packages or weights they fail with one line naming the fix."""

import hashlib
import sys

import pytest
import torch

from odedistill import DISTANCES, LPIPS, LPIPSAvgPool, LPIPSMaxPool, UserError, make_distance
from odedistill.distances import (
    PIQ_LPIPS_LAYERS,
    VGG16_IMAGENET,
    WeightFile,
    ensure_weights,
    hub_checkpoints,
    lpips_install_line,
    perceptual_input,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: $TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert hub_checkpoints() == folder
    return folder


@pytest.mark.parametrize(
    "cls, package, files",
    [
        (LPIPSMaxPool, "lpips", ["vgg16-397923af.pth"]),
        (LPIPSAvgPool, "piq", ["vgg16-397923af.pth", "lpips_weights.pt"]),
    ],
)
def test_without_the_package_the_error_names_package_and_weights(
    cls, package, files, torch_home, monkeypatch
):
    monkeypatch.setitem(sys.modules, package, None)  # an import of it fails, as here
    with pytest.raises(UserError) as info:
        cls()
    message = str(info.value)
    assert "\n" not in message
    assert f"'{package}' package" in message and "pip install -e '.[lpips]'" in message
    assert lpips_install_line() in message  # the torchvision built for this torch
    assert "ModuleNotFoundError" in message or "ImportError" in message
    for name in files:
        assert name in message
    assert str(torch_home) in message
    # with the weights in the cache, only the package is named
    torch_home.mkdir(parents=True)
    for name in files:
        (torch_home / name).write_bytes(b"")
    with pytest.raises(UserError) as info:
        cls()
    assert "weights" not in str(info.value) and "'.[lpips]'" in str(info.value)


def test_the_install_line_names_the_torchvision_built_for_the_torch():
    """torchvision 0.(m + 15) pairs with torch 2.m: 0.28 with the pinned 2.13.0, 0.29 with 2.14."""
    assert "'torchvision==0.28.*'" in lpips_install_line("2.13.0")
    cpu = lpips_install_line("2.13.0+cpu")  # a CPU build: torchvision from PyTorch's CPU index
    assert "'torchvision==0.28.*' --index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "'torchvision==0.29.*'" in lpips_install_line("2.14.1")
    assert "'torchvision==0.19.*'" in lpips_install_line("2.4.0")


def test_weights_that_cannot_be_downloaded_are_named_with_source_and_folder(torch_home, tmp_path):
    gone = WeightFile("gone.pt", (tmp_path / "no-such-file.pt").as_uri(), "a test file")
    with pytest.raises(UserError) as info:
        ensure_weights((gone,), "A distance")
    message = str(info.value)
    assert "\n" not in message and message.startswith("A distance needs weights")
    assert "download failed (URLError" in message
    assert f"download {gone.url} (a test file) into {torch_home}" in message
    assert "gone.pt" in message and not (torch_home / "gone.pt").exists()


def test_offline_error_names_the_real_files(torch_home):
    with pytest.raises(UserError) as info:
        ensure_weights(LPIPSAvgPool.weights, LPIPSAvgPool.label, download=False)
    message = str(info.value)
    assert "downloads are off" in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert (
        "https://github.com/photosynthesis-team/photosynthesis.metrics/releases/download/"
        "v0.4.0/lpips_weights.pt" in message
    )
    assert f"into {torch_home} (keeping the file names vgg16-397923af.pth, lpips_weights.pt)" in (
        message
    )
    assert LPIPSMaxPool.weights == (VGG16_IMAGENET,)
    assert LPIPSAvgPool.weights == (VGG16_IMAGENET, PIQ_LPIPS_LAYERS)
    assert VGG16_IMAGENET.hash_prefix == "397923af" and PIQ_LPIPS_LAYERS.hash_prefix is None


def test_cached_weights_are_not_downloaded_again(torch_home, tmp_path):
    torch_home.mkdir(parents=True)
    (torch_home / "here.pt").write_bytes(b"cached")
    unreachable = WeightFile("here.pt", (tmp_path / "no-such-file.pt").as_uri(), "cached")
    ensure_weights((unreachable,), "A distance")  # no download attempted
    ensure_weights((unreachable,), "A distance", download=False)
    assert (torch_home / "here.pt").read_bytes() == b"cached"


def test_missing_weights_are_downloaded_and_hash_checked(torch_home, tmp_path):
    source = tmp_path / "source.pt"
    source.write_bytes(b"some weights")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    good = WeightFile(f"net-{digest[:8]}.pth", source.as_uri(), "a test file")
    ensure_weights((good,), "A distance")
    assert (torch_home / good.name).read_bytes() == b"some weights"
    bad = WeightFile("net-00000000.pth", source.as_uri(), "a test file")
    with pytest.raises(UserError, match=r"download failed \(RuntimeError: invalid hash value"):
        ensure_weights((bad,), "A distance")
    assert not (torch_home / bad.name).exists()


def test_distance_names(monkeypatch, torch_home):
    assert LPIPS is LPIPSMaxPool
    monkeypatch.setitem(sys.modules, "lpips", None)
    monkeypatch.setitem(sys.modules, "piq", None)
    for name, package in [("lpips", "lpips"), ("lpips_maxpool", "lpips"), ("lpips_avgpool", "piq")]:
        with pytest.raises(UserError, match=f"'{package}' package"):
            make_distance(name)
    with pytest.raises(UserError, match="did you mean 'lpips_avgpool'"):
        make_distance("lpips_avgpol")
    # the help a recipe reference shows says which variant is the paper's and what 'lpips' is
    helps = {e.name: e.help for e in DISTANCES.entries()}
    assert "paper's" in helps["lpips_avgpool"] and "average pooling" in helps["lpips_avgpool"]
    assert "max pooling" in helps["lpips_maxpool"] and "not the paper's" in helps["lpips_maxpool"]
    assert helps["lpips"].startswith("an alias of 'lpips_maxpool'")


def test_images_are_prepared_as_the_official_code_does():
    a = torch.rand(2, 1, 32, 32) * 2 - 1
    x = perceptual_input(a)
    assert x.shape == (2, 3, 224, 224)
    expect = torch.nn.functional.interpolate(a.expand(-1, 3, -1, -1), size=224, mode="bilinear")
    torch.testing.assert_close(x, expect)
    big = torch.rand(1, 3, 256, 256)
    assert perceptual_input(big) is big
    with pytest.raises(ValueError, match="images"):
        perceptual_input(torch.rand(2, 8))
