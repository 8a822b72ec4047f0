"""EDM teachers in recipes: a converted checkpoint as teacher, the student as its copy, autodiff through attention."""

import math

import pytest
import torch

from odedistill.errors import UserError
from odedistill.infra.build import build_session
from odedistill.infra.recipes import from_dict
from odedistill.schemes import make_scheme
from odedistill.teachers import EDMPrecond, save_teacher

KWARGS = dict(
    img_resolution=8,
    img_channels=3,
    label_dim=10,
    use_fp16=False,
    sigma_min=0.0,
    sigma_max=float("inf"),
    sigma_data=0.5,
    model_type="SongUNet",
    model_channels=16,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
    augment_dim=9,
    dropout=0.13,
)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(1234)  # not the run's seed, so a fresh student cannot match by chance
    path = tmp_path_factory.mktemp("teacher") / "tiny.safetensors"
    save_teacher(EDMPrecond(**KWARGS), path, KWARGS)
    return path


def config(path, **student):
    return from_dict(
        {
            "run": {"device": "cpu"},
            "teacher": {"kind": "edm", "path": str(path)},
            "student": {"net": "teacher", "init": "teacher", **student},
            "scheme": {"kind": "autodiff", "N": 10},
        }
    )


def test_student_starts_as_the_teachers_network(teacher_file):
    s = build_session(config(teacher_file))
    teacher_net = s.system.denoiser.model
    student_net = s.model.net
    assert student_net is not teacher_net
    for (k, a), (_, b) in zip(
        teacher_net.state_dict().items(), student_net.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    # every weight trains but the augmentation-label map, which the student never uses
    trainable = {n for n, p in student_net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in student_net.named_parameters() if "map_augment" not in n}
    assert not any(p.requires_grad for p in teacher_net.parameters())
    assert all(
        m.dropout == 0.0
        for m in student_net.modules()
        if hasattr(m, "dropout") and isinstance(m.dropout, float)
    )
    assert s.system.label_dim == 10 and s.system.state_shape == (3, 8, 8)
    assert s.model.c_in == pytest.approx(1 / math.sqrt(0.25 + 80**2))


def test_random_init_has_the_teachers_shapes_but_not_its_weights(teacher_file):
    s = build_session(config(teacher_file, init="random"))
    t, st = s.system.denoiser.model.state_dict(), s.model.net.state_dict()
    assert {k: v.shape for k, v in t.items()} == {k: v.shape for k, v in st.items()}
    assert any(not torch.equal(t[k], st[k]) for k in t)


def test_autodiff_through_the_attention_bearing_edm_student(teacher_file):
    s = build_session(config(teacher_file))
    model = s.model.double()
    g = torch.Generator().manual_seed(0)
    z = s.system.sample_initial(3, g, dtype=torch.float64)
    cond = s.system.sample_condition(3, g).double()
    idx = torch.tensor([0, 5, 9])
    t, y, v = make_scheme("autodiff")(model.path(z, cond), s.grid, idx)
    h = 1e-5  # central difference in ln t, the network's time input
    fd = (model(z, t * math.exp(h), cond) - model(z, t * math.exp(-h), cond)) / (
        2 * h * t[:, None, None, None]
    )
    torch.testing.assert_close(v, fd, rtol=1e-5, atol=1e-6 * v.abs().max().item())
    v.square().mean().backward()
    attn = [m for n, m in model.net.named_modules() if n.endswith("qkv")]
    assert attn and all(m.weight.grad.abs().sum() > 0 for m in attn)


def test_missing_teacher_names_the_checkpoint(tmp_path):
    cfg = config(tmp_path / "edm-cifar10-32x32-uncond-vp.pkl")
    with pytest.raises(UserError, match=r"edm/pretrained/edm-cifar10-32x32-uncond-vp\.pkl"):
        build_session(cfg)


def test_mlp_student_cannot_copy_a_mixture_teacher():
    cfg = from_dict({"student": {"net": "teacher", "init": "teacher"}})
    with pytest.raises(UserError, match="only a teacher of kind 'edm', 'diffusers', 'edm_random'"):
        build_session(cfg)
