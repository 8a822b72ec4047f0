"""The learned digits teacher, its detector and the honest evaluation of a network teacher:
shipped files that load from anywhere, FD on the FID code path, the teacher's endpoints
computed once per evaluation (a counter on the teacher), and labels that say what they are."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.learned_teacher.data import DATA_DIR, REF_FILE, train_and_heldout
from odedistill.evaluation.endpoints import CACHE_FILE
from odedistill.evaluation.features import compute_feature_stats
from odedistill.evaluation.fid import fid_from_stats, load_detector, load_ref
from odedistill.evaluation.report import evaluate
from odedistill.infra.build import build_session, reported_weights, weights_of
from odedistill.infra.pictures import to_uint8
from odedistill.infra.recipes import load_config
from odedistill.infra.seeds import generate
from odedistill.sampling.samplers import SolverSampler
from odedistill.solvers import euler, heun

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_thread")

N = 6
NFE = [1, 3]
TINY = [
    f"scheme.N={N}",
    f"eval.nfe={NFE}",
    "eval.n_heldout=5",
    "train.ema_rates=[]",
]


class CountingDenoiser(torch.nn.Module):
    """The teacher, counting the states it is evaluated on."""

    def __init__(self, D):
        super().__init__()
        self.D, self.rows = D, 0

    def forward(self, x, sigma, class_labels=None):
        self.rows += x.shape[0]
        return self.D(x, sigma, class_labels=class_labels)


@pytest.fixture(scope="module")
def session():
    s = build_session(load_config("digits_learned", TINY), torch.device("cpu"))
    s.system.denoiser = CountingDenoiser(s.system.denoiser)
    return s


def run_eval(session, run_dir, **overrides):
    cfg = session.cfg
    for k, v in overrides.items():
        setattr(cfg.eval, k, v)
    D = session.system.denoiser
    D.rows = 0
    students = weights_of(session)
    report, outputs = evaluate(cfg, session.system, students, reported_weights(session), run_dir)
    return report, outputs, D.rows / cfg.eval.n_heldout


def test_the_recipe_finds_its_shipped_files_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("digits_learned")
    for path in (
        cfg.teacher.options.path,
        cfg.eval.fid_ref,
        cfg.eval.fid_detector,
        cfg.eval.fid_floor_ref,
    ):
        assert path.startswith(str(DATA_DIR)) and (DATA_DIR / path.split("/")[-1]).is_file()


def test_teacher_endpoints_are_computed_once_and_reused(session, tmp_path):
    """Evaluations per held-out state: Heun through the N-point grid once (2 (N - 1)), Euler
    N - 1, and the Euler and Heun baselines; a second evaluation reads the cached endpoints."""
    baselines = (N - 1) + sum(NFE) * 2
    report, outputs, per_state = run_eval(session, tmp_path)
    assert per_state == 2 * (N - 1) + baselines
    assert (tmp_path / CACHE_FILE).is_file()
    assert report["reference_cost"]["evaluations_per_state"] == 2 * (N - 1)
    again, outputs2, per_state = run_eval(session, tmp_path)
    assert per_state == baselines and again["reference_cost"]["cached"]
    torch.testing.assert_close(outputs2["exact"], outputs["exact"], rtol=0, atol=0)
    # other noise seeds: other endpoints, computed again
    _, outputs3, per_state = run_eval(session, tmp_path, seed=7)
    assert per_state == 2 * (N - 1) + baselines
    assert not torch.equal(outputs3["z"], outputs["z"])


def test_network_teacher_report_calls_nothing_data_or_exact(session, tmp_path):
    report, outputs, _ = run_eval(session, tmp_path, seed=12345)
    assert report["reference_label"] == f"teacher, Heun {N - 1} steps"
    assert report["reference"].startswith(f"teacher, Heun {N - 1} steps")
    assert report["data_floor_sliced_w1"] is None and "exact_solution" not in report
    assert "data" not in outputs
    # the endpoints are the teacher's Heun from the held-out z, as the solver computes them
    grid = session.grid.double().cpu()
    x = heun(session.system, outputs["z"].double(), grid)
    torch.testing.assert_close(outputs["exact"], x.double(), rtol=1e-6, atol=1e-6)


def test_solver_sampler_is_the_solver_from_the_seeds_noise(session):
    system = session.system
    for method, nfe, solve in (("euler", 3, euler), ("heun", 3, heun)):
        sampler = SolverSampler(system, method, nfe)
        _, s = next(generate(sampler, [0, 1], 2))
        grid = sampler.times
        if method == "euler":
            x = solve(system, s.z.float(), grid)
        else:
            assert len(grid) == 3 and sampler.last_step_euler  # 2 steps, the last one Euler
            x = solve(system, s.z.float(), grid, last_step_euler=True)
        torch.testing.assert_close(s.x, x.clamp(-1, 1))


def test_detector_classifies_held_out_digits_and_its_fd_is_the_fid_path():
    """Held-out accuracy at least 97 %; the held-out images' FD against their own shipped
    statistics (odedistill fid-ref) is 0 up to round-off."""
    detector = load_detector(DATA_DIR / "detector.pt")
    _, (x, y) = train_and_heldout()
    images = to_uint8(x).repeat(1, 3, 1, 1)
    with torch.no_grad():
        accuracy = (detector(images).argmax(1) == y).double().mean().item()
    assert accuracy >= 0.97
    mu, sigma = compute_feature_stats([images], detector, progress=False).mu_sigma()
    assert abs(fid_from_stats(mu, sigma, *load_ref(DATA_DIR / REF_FILE))) < 1e-6
    summary = json.loads((DATA_DIR / "detector.json").read_text())
    assert math.isclose(summary["heldout_accuracy"], accuracy)
    assert np.isfinite(summary["data_floor_fd"]) and summary["data_floor_fd"] > 0
