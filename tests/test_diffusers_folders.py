"""Where a diffusers teacher may come from: a pipeline folder with or without model_index.json,
and a Hugging Face Hub id resolved offline from a cache folder the test writes."""

import shutil

import pytest
import torch

from odedistill.errors import UserError
from odedistill.teachers import load_diffusers_teacher
from tests.test_diffusers_recipe import save_teacher

huggingface_hub = pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("diffusers") / "pipeline")


def denoised(folder) -> torch.Tensor:
    D = load_diffusers_teacher(folder)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return D(x, torch.tensor([0.5, 3.0]))


def test_unet_and_scheduler_folders_without_model_index(pipeline, tmp_path):
    """The two parts a training script saves side by side load as the pipeline does."""
    parts = tmp_path / "parts"
    for sub in ("unet", "scheduler"):
        shutil.copytree(pipeline / sub, parts / sub)
    assert not (parts / "model_index.json").exists()
    torch.testing.assert_close(denoised(parts), denoised(pipeline), rtol=0, atol=0)


def _offline_cache(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_hub_id_resolves_from_the_local_cache(pipeline, tmp_path, monkeypatch):
    """teacher.path = 'owner/name' reads the cached snapshot (the Hub cache's layout: refs/main
    names the snapshot folder), with no network."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-ddpm"
    shutil.copytree(pipeline, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    _offline_cache(monkeypatch, cache)
    monkeypatch.chdir(tmp_path)  # no folder named acme/tiny-ddpm here
    torch.testing.assert_close(denoised("acme/tiny-ddpm"), denoised(pipeline), rtol=0, atol=0)


def test_uncached_hub_id_is_a_one_line_error(tmp_path, monkeypatch):
    _offline_cache(monkeypatch, tmp_path / "empty-hub")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        load_diffusers_teacher("acme/not-cached")
    message = str(e.value)
    assert "\n" not in message
    assert "acme/not-cached" in message and "hf download acme/not-cached" in message
