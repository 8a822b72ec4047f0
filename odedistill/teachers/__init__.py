"""Teacher denoisers D(x; σ, class_labels): EDM networks, their checkpoints, exact mixtures."""

from odedistill.teachers.edm_pickle import EDMCheckpoint, read_edm_pickle
from odedistill.teachers.load import convert, load_teacher, read_converted, save_teacher
from odedistill.teachers.networks import DhariwalUNet, SongUNet
from odedistill.teachers.precond import EDMPrecond, VEPrecond, VPPrecond, build_network

__all__ = [
    "DhariwalUNet",
    "EDMCheckpoint",
    "EDMPrecond",
    "SongUNet",
    "VEPrecond",
    "VPPrecond",
    "build_network",
    "convert",
    "load_teacher",
    "read_converted",
    "read_edm_pickle",
    "save_teacher",
]
