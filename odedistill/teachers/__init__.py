"""Teacher denoisers D(x; σ, class_labels): EDM networks, their checkpoints, diffusers UNets, exact
mixtures and their flow-matching velocities."""

from odedistill.teachers.architectures import (
    EDM_ARCHITECTURES,
    EDM_PRETRAINED_URL,
    edm_architecture,
    random_edm_teacher,
)
from odedistill.teachers.diffusers import DiffusersDenoiser, DiffusersUNet, alphas_cumprod
from odedistill.teachers.diffusers_load import load_diffusers_teacher
from odedistill.teachers.edm_pickle import EDMCheckpoint, read_edm_pickle
from odedistill.teachers.gaussian_mixture import GaussianMixtureDenoiser, GaussianMixtureVelocity
from odedistill.teachers.load import convert, load_teacher, read_converted, save_teacher
from odedistill.teachers.networks import DhariwalUNet, SongUNet
from odedistill.teachers.precond import EDMPrecond, VEPrecond, VPPrecond, build_edm_module

__all__ = [
    "EDM_ARCHITECTURES",
    "EDM_PRETRAINED_URL",
    "DhariwalUNet",
    "DiffusersDenoiser",
    "DiffusersUNet",
    "EDMCheckpoint",
    "EDMPrecond",
    "GaussianMixtureDenoiser",
    "GaussianMixtureVelocity",
    "SongUNet",
    "VEPrecond",
    "VPPrecond",
    "alphas_cumprod",
    "build_edm_module",
    "convert",
    "edm_architecture",
    "load_diffusers_teacher",
    "load_teacher",
    "random_edm_teacher",
    "read_converted",
    "read_edm_pickle",
    "save_teacher",
]
