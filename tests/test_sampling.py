"""Sampling by seed (EDM's generate.py): per-seed noise, batch and rank independence, PNGs, CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from odedistill.errors import UserError
from odedistill.infra.build import build_session
from odedistill.infra.distributed import DistEnv
from odedistill.infra.recipes import from_dict
from odedistill.infra.rundir import write_run_config
from odedistill.infra.seeds import SeedNoise, format_seeds, generate, parse_seeds, shard_seeds
from odedistill.infra.students import read_student
from odedistill.sampling.samplers import StudentSampler, TeacherSampler
from odedistill.sampling.writers import png_path, sample_to
from odedistill.solvers import edm_sampler
from odedistill.teachers.gaussian_mixture import GaussianMixtureDenoiser
from odedistill.teachers.precond import EDMPrecond
from odedistill.training.trainer import Trainer
from tests.conftest import EDM_TEACHER_KWARGS

REPO = Path(__file__).resolve().parents[1]

# The conditional EDM teacher of tests/conftest.py (random weights: images leave [-1, 1],
# which exercises the clipping of the uint8 conversion).
TEACHER_KWARGS = EDM_TEACHER_KWARGS


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tiny_edm_teacher) -> EDMPrecond:
    return tiny_edm_teacher


def _recipe(**sections: dict) -> dict:
    raw = {
        "run": {"name": "tiny", "device": "cpu"},
        "teacher": {"preset": "digits", "count": 20},
        "student": {"net": "unet", "channels": 8},
        "scheme": {"N": 10},
        "train": {"iterations": 1, "batch": 8, "ema_rates": [0.9]},
        "eval": {"enabled": False},
    }
    for name, body in sections.items():
        raw[name] = {**raw.get(name, {}), **body}
    return raw


def make_run(run_dir: Path, **sections: dict) -> Path:
    """A run directory with one (untrained) checkpoint, as `odedistill run` leaves it."""
    cfg = from_dict(_recipe(**sections))
    session = build_session(cfg, torch.device("cpu"))
    write_run_config(cfg, run_dir)
    Trainer(session, run_dir).save()
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    pytest.importorskip("sklearn")
    return make_run(tmp_path_factory.mktemp("runs") / "digits")


def _main(*args: str) -> int:
    """Run the command line in this process; its exit status (0 when it returns)."""
    from odedistill.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _read_pngs(folder: Path) -> dict[int, np.ndarray]:
    """{seed: uint8 (H, W, C)} of every PNG under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*.png")):
        image = np.asarray(PIL.Image.open(p))
        out[int(p.stem)] = image[:, :, None] if image.ndim == 2 else image
    return out


# ---------------------------------------------------------------------------------------------
# Seeds.


def test_parse_seeds_reads_edm_ranges_and_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,5,10-12") == [0, 5, 10, 11, 12]
    assert parse_seeds("7") == [7]
    assert len(parse_seeds("0-49999")) == 50000
    for spec in ("0,5,10-12", "3,0-2,9", "0-49999", "42"):
        assert parse_seeds(format_seeds(parse_seeds(spec))) == parse_seeds(spec)
    assert format_seeds([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


@pytest.mark.parametrize("spec", ["5-1", "0,0", "0-3,2", "a", "-1", "1.5", "", "0,,1"])
def test_parse_seeds_rejects_bad_specs(spec):
    with pytest.raises(UserError):
        parse_seeds(spec)


def test_shards_take_every_seed_exactly_once():
    seeds = parse_seeds("0-10,20")
    shards = [shard_seeds(seeds, DistEnv(r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == seeds
    assert shards[1] == seeds[1::3]


# ---------------------------------------------------------------------------------------------
# Per-seed noise.


def test_seed_noise_is_edms_stacked_generator():
    """Row b is what torch.Generator().manual_seed(seed_b mod 2^32) draws: randn, then randint."""
    seeds = [3, 0, 2**32 + 5]
    rnd = SeedNoise(seeds)
    latents, labels = rnd.randn((3, 4, 4)), rnd.randint(10)
    for b, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed % 2**32)
        torch.testing.assert_close(latents[b], torch.randn((3, 4, 4), generator=g), rtol=0, atol=0)
        assert labels[b] == torch.randint(10, (), generator=g)


def test_teacher_samples_are_edm_generate_per_seed(teacher):
    """Each image equals EDM's recipe run alone: latents, then label, from the seed's generator;
    the network is called in float32 as EDM's preconditioner casts it."""

    def edm_precision(x, sigma, class_labels=None):
        return teacher(x.to(torch.float32), sigma.to(torch.float32), class_labels)

    sampler = TeacherSampler(teacher, num_steps=3)
    seeds = [11, 4, 7]
    (_, s), *_ = list(generate(sampler, seeds, batch=3))
    for b, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        latents = torch.randn((3, 8, 8), generator=g)[None]
        label = torch.randint(4, (), generator=g)
        x = edm_sampler(edm_precision, latents, torch.eye(4)[label][None], num_steps=3)
        assert s.labels[b] == label
        torch.testing.assert_close(s.x[b : b + 1], x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("churn", [0.0, 30.0])
def test_teacher_image_of_a_seed_does_not_depend_on_the_batch(teacher, churn):
    sampler = TeacherSampler(teacher, num_steps=3, S_churn=churn)
    seeds = [5, 1, 9, 2, 7]
    runs = [list(generate(sampler, seeds, batch=5)), list(generate(sampler, seeds, batch=2))]
    runs.append(list(generate(sampler, seeds[::-1], batch=1))[::-1])
    one, split, alone = (torch.cat([s.x for _, s in run]) for run in runs)
    z = [torch.cat([s.z for _, s in run]) for run in runs]
    torch.testing.assert_close(z[0], z[1], rtol=0, atol=0)  # the noise is bitwise the same
    torch.testing.assert_close(z[0], z[2], rtol=0, atol=0)
    # float32 network arithmetic may round differently in other batch sizes
    torch.testing.assert_close(one, split, rtol=0, atol=1e-4)
    torch.testing.assert_close(one, alone, rtol=0, atol=1e-4)
    assert (one[0] - one[1]).abs().max() > 0.1  # different seeds, different images
    if churn:  # churn noise is drawn: the images differ from the deterministic sampler's
        plain = torch.cat([s.x for _, s in generate(TeacherSampler(teacher, 3), seeds, 5)])
        assert (plain - one).abs().max() > 1e-3


def test_class_option_fixes_the_label_but_not_the_noise(teacher):
    sampler = TeacherSampler(teacher, num_steps=2)
    (_, free), *_ = list(generate(sampler, [0, 1, 2], batch=3))
    (_, fixed), *_ = list(generate(sampler, [0, 1, 2], batch=3, class_idx=3))
    assert fixed.labels.tolist() == [3, 3, 3]
    torch.testing.assert_close(free.z, fixed.z, rtol=0, atol=0)
    with pytest.raises(UserError, match="--class must be in 0..3"):
        next(generate(sampler, [0], class_idx=4))


def test_gaussian_mixture_teacher_on_image_shapes():
    means = torch.linspace(-0.8, 0.8, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    D = GaussianMixtureDenoiser(means, 0.05)
    sampler = TeacherSampler(D, num_steps=12)
    assert sampler.state_shape == (3, 4, 4) and sampler.label_dim == 0
    x = torch.cat([s.x for _, s in generate(sampler, range(8), batch=3)])
    # Heun with 12 steps lands near one of the two means.
    dist = torch.stack([(x - m).flatten(1).norm(dim=1) for m in means]).min(0).values
    assert dist.max() < 0.05 * 4 * np.sqrt(48)


def test_student_noise_is_the_teachers_latents_times_T(digits_run):
    student = read_student(digits_run, "ema")
    model, system = student.model, student.system
    sampler = StudentSampler(model, system)
    seeds = [0, 3, 8]
    parts = list(generate(sampler, seeds, batch=2))
    z = torch.cat([s.z for _, s in parts])
    x = torch.cat([s.x for _, s in parts])
    for b, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        torch.testing.assert_close(z[b], torch.randn((1, 8, 8), generator=g) * 80.0)
    with torch.no_grad():
        torch.testing.assert_close(x, model.sample(z).clamp(-1, 1), rtol=0, atol=1e-5)
    single = torch.cat([s.x for _, s in generate(sampler, seeds[::-1], batch=1)]).flip(0)
    torch.testing.assert_close(single, x, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Files.


def test_pngs_are_clip_x_127_5_plus_128_as_uint8_named_by_seed(teacher, tmp_path):
    sampler = TeacherSampler(teacher, num_steps=2)
    seeds = [3, 1001, 1002]
    sample_to(tmp_path / "out", sampler, seeds, batch=2, subdirs=True, progress=False)
    x = torch.cat([s.x for _, s in generate(sampler, seeds, batch=3)]).numpy()
    assert x.dtype == np.float64 and (np.abs(x) > 1).any()  # clipping is exercised
    expected = np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    assert files == ["000000", "000000/000003.png", "001000", "001000/001001.png",
                     "001000/001002.png"]  # fmt: skip
    for b, seed in enumerate(seeds):
        image = PIL.Image.open(png_path(tmp_path / "out", seed, subdirs=True))
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), expected[b])


def test_grey_images_are_written_as_L_pngs(digits_run, tmp_path):
    student = read_student(digits_run)
    sampler = StudentSampler(student.model, student.system)
    sample_to(tmp_path / "out", sampler, [0, 1], progress=False)
    image = PIL.Image.open(tmp_path / "out" / "000001.png")
    assert image.mode == "L" and image.size == (8, 8)
    x = torch.cat([s.x for _, s in generate(sampler, [1])]).numpy()
    expected = np.clip(x[0, 0] * 127.5 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_npz_holds_images_seeds_and_labels_in_seed_order(teacher, tmp_path):
    sampler = TeacherSampler(teacher, num_steps=2)
    seeds = [9, 2, 4]
    sample_to(tmp_path / "s.npz", sampler, seeds, batch=2, progress=False)
    with np.load(tmp_path / "s.npz") as z:
        assert z["seeds"].tolist() == seeds
        assert z["images"].shape == (3, 8, 8, 3) and z["images"].dtype == np.uint8
        assert (
            z["labels"].tolist() == [s.labels for _, s in generate(sampler, seeds, 3)][0].tolist()
        )
    sample_to(tmp_path / "pngs", sampler, seeds, progress=False)
    pngs = _read_pngs(tmp_path / "pngs")
    with np.load(tmp_path / "s.npz") as z:
        for seed, image in zip(seeds, z["images"], strict=True):
            np.testing.assert_array_equal(pngs[seed], image)


# ---------------------------------------------------------------------------------------------
# The command line.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(*args: str) -> list[subprocess.CompletedProcess[str]]:
    """Run `odedistill ARGS` as two gloo ranks, with the environment torchrun would set."""
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "odedistill", *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def test_two_gloo_ranks_write_every_seed_once_and_match_one_process(digits_run, tmp_path):
    seeds = "0-6,1000,1003"
    common = ["sample", str(digits_run), "--seeds", seeds, "--batch", "2", "--device", "cpu"]
    ranks = _two_ranks(*common, "--out", str(tmp_path / "two"), "--subdirs")
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr + ranks[1].stderr
    ranks = _two_ranks(*common, "--out", str(tmp_path / "two.npz"), "--quiet")
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr + ranks[1].stderr
    assert _main(*common, "--out", str(tmp_path / "one"), "--subdirs", "--batch", "3") == 0

    files = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))
    assert [p.stem for p in files] == [f"{s:06d}" for s in parse_seeds(seeds)]  # once each
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporaries
    two, single = _read_pngs(tmp_path / "two"), _read_pngs(tmp_path / "one")
    assert sorted(two) == sorted(single) == parse_seeds(seeds)
    # The noise of a seed is bitwise the same; float32 convolutions over batches of different
    # sizes may round differently, which can move a rare pixel by one level.
    a = np.stack([two[s] for s in single]).astype(int)
    b = np.stack([single[s] for s in single]).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
    assert np.abs(a - a[:1]).max() > 10  # seeds give different images
    with np.load(tmp_path / "two.npz") as z:
        assert z["seeds"].tolist() == parse_seeds(seeds)
        for seed, image in zip(z["seeds"], z["images"], strict=True):
            np.testing.assert_array_equal(image, two[int(seed)])  # same batches, same pixels


def test_cli_n_and_seed_are_sugar_for_seeds_and_png_is_a_grid(digits_run, tmp_path):
    assert (
        _main(
            "sample", str(digits_run), "--n", "5", "--seed", "3", "--out", str(tmp_path / "a.npz")
        )
        == 0
    )
    assert _main("sample", str(digits_run), "--seeds", "3-7", "--out", str(tmp_path / "b.npz")) == 0
    assert _main("sample", str(digits_run), "--n", "16", "--out", str(tmp_path / "grid.png")) == 0
    with np.load(tmp_path / "a.npz") as za, np.load(tmp_path / "b.npz") as zb:
        assert za["seeds"].tolist() == [3, 4, 5, 6, 7]
        np.testing.assert_array_equal(za["images"], zb["images"])
    assert PIL.Image.open(tmp_path / "grid.png").size == (4 * 37, 4 * 37)  # 4x4 of 8 px, 4x


def test_cli_two_dimensional_run_writes_npz_and_a_scatter(tmp_path, capsys):
    run = make_run(
        tmp_path / "ring",
        teacher={"preset": "ring", "count": 0},
        student={"net": "mlp", "width": 16, "depth": 1},
    )
    assert _main("sample", str(run), "--n", "50", "--out", str(tmp_path / "s.npz")) == 0
    assert _main("sample", str(run), "--n", "50", "--out", str(tmp_path / "s.png")) == 0
    with np.load(tmp_path / "s.npz") as z:
        assert z["samples"].shape == z["z"].shape == (50, 2)
        g = torch.Generator().manual_seed(7)
        np.testing.assert_allclose(z["z"][7], (torch.randn(1, 2, generator=g) * 80)[0].numpy())
    assert (tmp_path / "s.png").stat().st_size > 0
    assert _main("sample", str(run), "--n", "5", "--out", str(tmp_path / "pngs")) == 2
    assert "image states" in capsys.readouterr().err
    assert not (tmp_path / "pngs").exists()


def test_cli_teacher_file(teacher, tmp_path):
    load = pytest.importorskip("odedistill.teachers.load")
    if not hasattr(load, "save_teacher"):
        pytest.skip("odedistill.teachers.load.save_teacher is not available yet")
    init = {k: v for k, v in TEACHER_KWARGS.items()}
    path = tmp_path / "teacher.safetensors"
    load.save_teacher(teacher, path, init, class_name="EDMPrecond")
    out = tmp_path / "t.npz"
    args = ["--seeds", "0-3", "--steps", "2", "--out", str(out), "--device", "cpu"]
    assert _main("sample", "--teacher", str(path), *args) == 0
    sampler = TeacherSampler(teacher, num_steps=2)
    x = torch.cat([s.x for _, s in generate(sampler, range(4))])
    with np.load(tmp_path / "t.npz") as z:
        expected = np.clip(x.numpy() * 127.5 + 128, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(z["images"], expected.transpose(0, 2, 3, 1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "{tmp}/nowhere", "--out", "{tmp}/x.npz"], "no run directory"),
        (["sample", "--out", "{tmp}/x.npz"], "give a RUN"),
        (["sample", "{run}", "--seeds", "5-1", "--out", "{tmp}/x.npz"], "runs backwards"),
        (["sample", "{run}", "--seeds", "1", "--n", "2", "--out", "{tmp}/x.npz"], "not both"),
        (["sample", "{run}", "--class", "1", "--out", "{tmp}/x.npz"], "unconditional"),
        (["sample", "{run}", "--steps", "4", "--out", "{tmp}/x.npz"], "--teacher"),
        (["sample", "{run}", "--weights", "0.5", "--out", "{tmp}/x.npz"], "no EMA with rate"),
        (["sample", "{run}", "--out", "{tmp}/x.jpg"], "--out must be"),
        (["sample", "--teacher", "{tmp}/t.pkl", "--out", "{tmp}/x.npz"], "not found"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    digits_run, tmp_path, capsys, args, message
):
    code = _main(*[a.format(tmp=tmp_path, run=digits_run) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")
    assert message in err
    assert list(tmp_path.iterdir()) == []
