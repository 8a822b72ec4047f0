"""DDPM-style diffusers teachers: deterministic DDIM is explicit Euler on their probability-flow ODE."""

import copy
import json
import math
import sys

import pytest
import torch

from odedistill import ProbabilityFlowODE, UserError, euler
from odedistill.teachers import DiffusersDenoiser, alphas_cumprod, load_diffusers_teacher
from tests.conftest import tiny_unet2d

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 8, 8)


def tiny_unet(seed: int = 0, **kwargs) -> torch.nn.Module:
    """A randomly initialised two-level UNet2DModel with attention (45k parameters)."""
    return tiny_unet2d(seed, **kwargs).eval()


def ddim(unet, scheduler, noise, steps, class_labels=None):
    """diffusers' deterministic DDIM loop (eta = 0) from unit-variance noise x_T."""
    scheduler.set_timesteps(steps)
    x = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(x, t, class_labels=class_labels).sample
            x = scheduler.step(out, t, x, eta=0.0).prev_sample
    return x


def ddim_sigmas(teacher, scheduler):
    """The σ of DDIM's timesteps, then of its final step (to ᾱ = 1 with set_alpha_to_one)."""
    t = scheduler.timesteps
    prev = int(t[-1]) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    assert prev < 0  # the last step goes to final_alpha_cumprod
    final = scheduler.final_alpha_cumprod.double()
    sigma_final = ((1 - final) / final).sqrt().reshape(1)
    return torch.cat([teacher.sigmas[t], sigma_final])


def euler_like_ddim(teacher, noise, grid, class_labels=None):
    """Explicit Euler on dx/dσ = (x − D)/σ from x = x_T·√(1+σ_T²) (x_T/√ᾱ_T) through ``grid``."""
    system = ProbabilityFlowODE(
        teacher,
        SHAPE,
        t_max=float(grid[0]),
        t_min=float(grid[-2]),
        label_dim=teacher.label_dim,
    )
    return euler(system, noise * math.sqrt(1 + float(grid[0]) ** 2), grid, class_labels)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_is_euler_on_the_probability_flow_ode_float64(prediction_type, spacing):
    unet = tiny_unet().double()
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        steps_offset=1 if spacing == "leading" else 0,
    )
    # the scheduler's tables in float64, so that both sides compute in float64
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    teacher = DiffusersDenoiser(unet, scheduler.alphas_cumprod, prediction_type)
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_ddim = ddim(unet, scheduler, noise, steps=8)
    grid = ddim_sigmas(teacher, scheduler)
    assert grid[-1] == 0 and torch.equal(teacher.c_noise(grid[:-1]), scheduler.timesteps.double())
    x_euler = euler_like_ddim(teacher, noise, grid)
    assert (x_ddim - x_euler).abs().max() < 1e-9


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_is_euler_in_float32_with_the_schedule_from_the_config(prediction_type):
    unet = tiny_unet(seed=2)
    scheduler = diffusers.DDIMScheduler(clip_sample=False, prediction_type=prediction_type)
    teacher = DiffusersDenoiser.from_scheduler_config(unet, scheduler.config)
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    x_ddim = ddim(unet, scheduler, noise, steps=10)
    x_euler = euler_like_ddim(teacher, noise, ddim_sigmas(teacher, scheduler))
    assert x_euler.dtype == torch.float32
    # float32 round-off of diffusers' coefficients only (the endpoints reach |x| ~ 100 for ε)
    assert (x_ddim - x_euler).abs().max() / x_ddim.abs().max() < 1e-5


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "linear"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "sigmoid"},
        {"trained_betas": torch.linspace(1e-4, 0.03, 500).tolist()},
    ],
)
def test_schedule_matches_diffusers(config):
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=len(config.get("trained_betas", [0] * 1000)), **config
    )
    ours = alphas_cumprod(scheduler.config)
    assert ours.dtype == torch.float64
    # diffusers builds the betas and their product in float32; the cosine schedule's last
    # β = 0.999 loses four digits there in 1 − β (relative error 1.3e-5 in its ᾱ_999)
    theirs = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(ours[:-1], theirs[:-1], rtol=2e-6, atol=0)
    torch.testing.assert_close(ours[-1:], theirs[-1:], rtol=2e-5, atol=0)


def test_unsupported_schedules_are_named():
    with pytest.raises(UserError, match="laplace"):
        alphas_cumprod({"beta_schedule": "laplace"})
    with pytest.raises(UserError, match="rescale_betas_zero_snr"):
        alphas_cumprod({"rescale_betas_zero_snr": True})
    with pytest.raises(UserError, match="prediction_type"):
        DiffusersDenoiser(tiny_unet(), alphas_cumprod({}), "flow")


def test_timestep_interpolation_is_exact_on_the_schedule_and_monotone():
    teacher = DiffusersDenoiser(tiny_unet(), alphas_cumprod({"beta_schedule": "linear"}))
    t = torch.arange(1000, dtype=torch.float64)
    assert torch.equal(teacher.c_noise(teacher.sigmas), t)
    assert torch.equal(teacher.sigma(t), teacher.sigmas)
    # dense in ln σ across the schedule: nondecreasing, and linear in ln σ between nodes
    log_s = torch.linspace(
        math.log(teacher.sigma_min), math.log(teacher.sigma_max), 20001, dtype=torch.float64
    )
    tc = teacher.c_noise(log_s.exp())
    assert (tc[1:] >= tc[:-1]).all() and tc[0] == 0 and tc[-1] == 999
    k = 500
    ls = teacher.sigmas[k : k + 2].log()
    mid = ((ls[0] + 0.3 * (ls[1] - ls[0])).exp()).reshape(1)
    torch.testing.assert_close(teacher.c_noise(mid), torch.tensor([k + 0.3], dtype=torch.float64))
    # sigma() inverts c_noise() everywhere inside the schedule
    torch.testing.assert_close(teacher.sigma(tc), log_s.exp(), rtol=1e-12, atol=0)
    # clamped outside: below σ_0 is timestep 0, above σ_max is N − 1
    out = teacher.c_noise(torch.tensor([1e-5, 1e4], dtype=torch.float64))
    assert out.tolist() == [0.0, 999.0]
    # the input scale is √ᾱ
    ab = alphas_cumprod({"beta_schedule": "linear"})
    torch.testing.assert_close(teacher.c_in(teacher.sigmas), ab.sqrt())


def test_denoiser_is_the_preconditioned_network():
    teacher = DiffusersDenoiser(tiny_unet(), alphas_cumprod({}), "v_prediction").double()
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.tensor([0.05, 2.0, 70.0], dtype=torch.float64)
    t = teacher.c_noise(sigma)
    x_t = x / (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)
    with torch.no_grad():
        v = teacher.model.unet(x_t, t).sample
    # ε = √ᾱ v + √(1−ᾱ) x_t and D = x − σ ε
    ab = (1 / (1 + sigma**2)).reshape(-1, 1, 1, 1)
    eps = ab.sqrt() * v + (1 - ab).sqrt() * x_t
    expect = x - sigma.reshape(-1, 1, 1, 1) * eps
    with torch.no_grad():
        torch.testing.assert_close(teacher(x, sigma), expect, rtol=1e-12, atol=1e-12)
        # a scalar σ is broadcast, and float32 input gives float32 output
        assert teacher(x.float(), 1.0).dtype == torch.float32


def test_class_conditional_unet_takes_one_hot_labels():
    unet = tiny_unet(num_class_embeds=4).double()
    scheduler = diffusers.DDIMScheduler(clip_sample=False)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    teacher = DiffusersDenoiser(unet, scheduler.alphas_cumprod)
    assert teacher.label_dim == 4
    labels = torch.tensor([2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 4).double()
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x_ddim = ddim(unet, scheduler, noise, steps=5, class_labels=labels)
    x_euler = euler_like_ddim(teacher, noise, ddim_sigmas(teacher, scheduler), one_hot)
    assert (x_ddim - x_euler).abs().max() < 1e-9
    other = euler_like_ddim(teacher, noise, ddim_sigmas(teacher, scheduler), one_hot.flip(1))
    assert (other - x_euler).abs().max() > 1e-3  # the label matters
    with pytest.raises(UserError, match="class-conditional"):
        teacher(noise, 1.0)
    with pytest.raises(UserError, match="one-hot rows"):
        teacher(noise, 1.0, torch.zeros(2, 4, dtype=torch.float64))


def test_learned_variance_output_keeps_the_prediction_channels():
    unet = tiny_unet(out_channels=6).double()
    teacher = DiffusersDenoiser(unet, alphas_cumprod({}))
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        eps = unet(x / math.sqrt(1 + 4.0), teacher.c_noise(2.0)).sample[:, :3]
        torch.testing.assert_close(teacher(x, 2.0), x - 2.0 * eps)


def test_learned_time_embedding_is_refused():
    with pytest.raises(UserError, match="positional"):
        DiffusersDenoiser(
            tiny_unet(time_embedding_type="learned", num_train_timesteps=1000), alphas_cumprod({})
        )


# ------------------------------------------------------------------------------ loading
def _check_same(loaded, unet, config):
    expect = DiffusersDenoiser.from_scheduler_config(unet, config)
    assert loaded.prediction_type == config["prediction_type"]
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 3.0), expect(x, 3.0), rtol=0, atol=0)
    torch.testing.assert_close(loaded.sigmas, expect.sigmas, rtol=0, atol=0)


def test_load_pipeline_folder(tmp_path):
    unet = tiny_unet(seed=5)
    scheduler = diffusers.DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    _check_same(load_diffusers_teacher(tmp_path), unet, scheduler.config)
    # the pipeline's unet/ folder finds its sibling scheduler/
    _check_same(load_diffusers_teacher(tmp_path / "unet"), unet, scheduler.config)


def test_load_unet_folder_with_scheduler_config_beside_it(tmp_path):
    unet = tiny_unet(seed=6)
    scheduler = diffusers.DDIMScheduler(prediction_type="epsilon")
    unet.save_pretrained(tmp_path)
    scheduler.save_config(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    _check_same(load_diffusers_teacher(tmp_path), unet, scheduler.config)


def test_load_errors_name_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_diffusers_teacher(tmp_path / "nowhere")
    with pytest.raises(UserError, match="model_index.json"):
        load_diffusers_teacher(tmp_path)
    unet = tiny_unet()
    (tmp_path / "u").mkdir()
    unet.save_pretrained(tmp_path / "u")
    with pytest.raises(UserError, match="scheduler_config.json"):
        load_diffusers_teacher(tmp_path / "u")
    # a pipeline folder without its scheduler
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "model_index.json").write_text("{}")
    unet.save_pretrained(tmp_path / "p" / "unet")
    with pytest.raises(UserError, match=r"scheduler/scheduler_config\.json"):
        load_diffusers_teacher(tmp_path / "p")


def test_pickled_weights_are_refused(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path, safe_serialization=False)
    diffusers.DDPMScheduler().save_config(tmp_path)
    assert not (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    with pytest.raises(UserError, match=r"\.bin weights.*safe_serialization=True"):
        load_diffusers_teacher(tmp_path)


def test_other_unet_classes_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "scheduler_config.json").write_text("{}")
    with pytest.raises(UserError, match="UNet2DConditionModel"):
        load_diffusers_teacher(tmp_path)


def test_student_copy_has_the_teachers_call_convention():
    """A copy of ``teacher.model`` is an EDM-style F(c_in·x, c_noise, class_labels)."""
    teacher = DiffusersDenoiser(tiny_unet(num_class_embeds=3), alphas_cumprod({}))
    student_net = copy.deepcopy(teacher.model)
    x = torch.randn(2, *SHAPE)
    sigma = torch.tensor([80.0, 80.0])
    labels = torch.eye(3)[[0, 2]]
    with torch.no_grad():
        F_x = student_net(
            teacher.c_in(sigma).reshape(-1, 1, 1, 1).float() * x, teacher.c_noise(sigma), labels
        )
        torch.testing.assert_close(x - 80.0 * F_x, teacher(x, sigma, labels))


def test_without_diffusers_the_loader_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "scheduler_config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # an import of it fails
    with pytest.raises(UserError, match=r"pip install -e '\.\[diffusers\]'"):
        load_diffusers_teacher(tmp_path)
