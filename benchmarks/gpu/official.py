"""The official PID code's own training step (pantheon5100/pid_diffusion), for a side-by-side timing.

Their ``scripts/cm_train.py`` builds the student and the teacher with
``create_one_shot_edmedm_model_and_diffusion`` (EDM's ``SongUNet``, DDPM++ at 32 x 32; the
student through ``OneShotDenoiser``, the teacher through ``EDMEDMDenoiser``), loads the same
weights into both, and ``ODETrainLoop.run_step`` does one iteration: ``forward_backward``
(``ode_losses`` on the whole batch, ``log_loss_dict``, ``MixedPrecisionTrainer.backward``),
``MixedPrecisionTrainer.optimize`` (the gradient and weight norms, RAdam) and ``_update_ema``
(``update_ema`` for each of the three rates). ``OfficialStep`` runs exactly those calls of
their code in one process, without the DistributedDataParallel wrapper and the logger's file
output.

Their modules import packages that the training step never calls: ``piq`` (LPIPS, built only
for ``loss_norm = 'lpips'``), ``blobfile`` and ``mpi4py`` (files and process groups),
``torchvision`` (a random crop). Those that are not installed are replaced by empty stand-in
modules, and recorded; their LPIPS needs piq and VGG-16 weights from the network, so the
comparison uses their ``loss_norm = 'l2'`` against our ``loss.distance = 'l2'`` (the same
mean squared difference).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch

#: the packages their modules import at the top, and what a stand-in must provide
_STAND_INS: dict[str, dict[str, Any]] = {
    "piq": {"LPIPS": None},
    "blobfile": {},
    "mpi4py": {"MPI": None},
    "torchvision": {"transforms": None},
    "torchvision.transforms": {"RandomCrop": None},
}


#: their modules the step uses
SUBMODULES = (
    "script_util",
    "karras_diffusion",
    "train_util",
    "fp16_util",
    "nn",
    "logger",
    "resample",
)


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _unavailable(what: str) -> type:
    """A class that can be built (their EDMEDMDenoiser builds an LPIPS it never calls) but not used."""

    class StandIn:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{what} is a stand-in: the package is not installed")

    StandIn.__name__ = what.rsplit(".", 1)[-1]
    return StandIn


def load_official(path: Path) -> tuple[types.ModuleType, list[str]]:
    """Import their ``cm`` package from ``path`` (a clone of pantheon5100/pid_diffusion).

    Returns the ``cm`` package and the names of the packages replaced by stand-ins.
    """
    path = Path(path).resolve()
    if not (path / "cm" / "karras_diffusion.py").is_file():
        raise FileNotFoundError(f"{path} is not a clone of pantheon5100/pid_diffusion (no cm/)")
    stood_in = []
    for name, attrs in _STAND_INS.items():
        top = name.split(".")[0]
        if name in sys.modules or not _missing(top):
            continue
        mod = types.ModuleType(name)
        for attr in attrs:
            setattr(mod, attr, _unavailable(f"{name}.{attr}"))
        sys.modules[name] = mod
        if "." in name:
            setattr(sys.modules[top], name.split(".")[1], mod)
        stood_in.append(name)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    with warnings.catch_warnings():  # their network's softmax is a torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        cm = importlib.import_module("cm")
        for sub in SUBMODULES:
            importlib.import_module(f"cm.{sub}")
    return cm, sorted(set(n.split(".")[0] for n in stood_in))


class OfficialStep:
    """Their student, teacher, optimiser, EMAs and loss; ``step()`` is one ``run_step``."""

    def __init__(
        self,
        cm: types.ModuleType,
        shape: dict[str, Any],
        batch: int,
        device: torch.device,
        log_dir: Path,
        seed: int = 0,
    ) -> None:
        su, tu, fp16 = cm.script_util, cm.train_util, cm.fp16_util
        cm.logger.configure(dir=str(log_dir), format_strs=[])  # no files, no stdout
        kwargs = su.model_and_diffusion_defaults()
        # scripts/distill_pid_diffusion.sh (CIFAR-10): these flags, everything else default
        kwargs.update(
            image_size=shape["image_size"],
            num_channels=shape["num_channels"],
            num_res_blocks=shape["num_res_blocks"],
            channel_mult=shape["channel_mult"],
            attention_resolutions=shape["attention_resolutions"],
            class_cond=False,
            use_scale_shift_norm=True,
            dropout=0.0,
            resblock_updown=True,
            use_fp16=False,
            weight_schedule="uniform",
        )
        kwargs["loss_norm"] = "l2"  # their LPIPS needs piq and downloaded VGG-16 weights
        torch.manual_seed(seed)
        self.model, self.diffusion = su.create_one_shot_edmedm_model_and_diffusion(
            **kwargs, random_init=False
        )
        teacher_kwargs = dict(kwargs, dropout=0.0, distillation=False, random_init=False)
        self.teacher, self.teacher_diffusion = su.create_one_shot_edmedm_model_and_diffusion(
            **teacher_kwargs, teacher_precond=True
        )
        self.teacher.load_state_dict(self.model.state_dict())  # cm_train.py: the same weights
        self.model.to(device).train()
        self.teacher.to(device).eval().requires_grad_(False)
        self.device = device
        self.batch = batch
        self.num_scales = shape["num_scales"]
        self.image_size = (self.model.in_channels, self.model.image_size, self.model.image_size)
        self.mp_trainer = fp16.MixedPrecisionTrainer(model=self.model, use_fp16=False)
        self.opt = torch.optim.RAdam(self.mp_trainer.master_params, lr=2e-4, eps=1e-8)
        self.ema_rate = [0.999, 0.9999, 0.99995]
        self.ema_params = [
            [p.detach().clone() for p in self.mp_trainer.master_params] for _ in self.ema_rate
        ]
        self.schedule_sampler = cm.resample.UniformSampler(self.diffusion)
        self._tu, self._nn = tu, cm.nn
        self.loss = torch.zeros(())

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def resident_tensors(self) -> list[torch.Tensor]:
        """Weights, teacher, EMAs and optimiser state: what stays on the device between steps."""
        out = list(self.model.parameters()) + list(self.teacher.parameters())
        out += [p for params in self.ema_params for p in params]
        out += [v for st in self.opt.state.values() for v in st.values() if torch.is_tensor(v)]
        return out

    def step(self) -> None:
        """ODETrainLoop.run_step on one batch of noise (their run_loop's batch: randn * 80)."""
        batch = {"noise": torch.randn((self.batch, *self.image_size), device=self.device) * 80.0}
        self.mp_trainer.zero_grad()
        t, _ = self.schedule_sampler.sample(self.batch, self.device)
        losses = self.diffusion.ode_losses(
            self.model,
            batch,
            self.num_scales,
            teacher_model=self.teacher,
            teacher_diffusion=self.teacher_diffusion,
            model_kwargs=None,
        )
        loss = losses["loss"].mean()
        self._tu.log_loss_dict(self.diffusion, t, {k: v for k, v in losses.items()})
        self.mp_trainer.backward(loss)
        if self.mp_trainer.optimize(self.opt):
            for rate, params in zip(self.ema_rate, self.ema_params, strict=True):
                self._nn.update_ema(params, self.mp_trainer.master_params, rate=rate)
        self.loss = loss.detach()


@contextlib.contextmanager
def fp32_flags(tf32: bool):
    """cuBLAS and cuDNN TF32 switches for a block, restored after."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
