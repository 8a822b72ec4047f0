"""EDM checkpoints (DESIGN §3): read without EDM's code, convert, load, and never run their code."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from odedistill.errors import UserError
from odedistill.teachers.edm_pickle import read_edm_pickle
from odedistill.teachers.load import convert, load_teacher, read_converted

REPO = Path(__file__).resolve().parents[1]

# A stand-in for EDM's ``torch_utils.persistence``, written from the format's description: a
# persistent object pickles as ``_reconstruct_persistent_obj(meta)`` with meta = {type: 'class',
# version: 6, module_src, class_name, state: the object's __dict__}. Its loader does what EDM's
# does (execute module_src in a fresh module); only the positive control below uses it.
PERSISTENCE_SRC = '''
"""Test stand-in for torch_utils.persistence: the same pickle format as EDM's."""

import contextlib
import copy
import inspect
import sys
import types
import uuid

VERSION = 6
_SUBCLASSES = {}


def persistent_class(cls, module_src=None):
    """Subclass of cls that pickles as _reconstruct_persistent_obj(meta), source included."""
    key = (cls, module_src)
    if key not in _SUBCLASSES:
        src = module_src
        if src is None:
            src = inspect.getsource(sys.modules[cls.__module__])

        def __reduce__(self):
            state = dict(self.__getstate__() or {})
            meta = dict(
                type="class",
                version=VERSION,
                module_src=src,
                class_name=cls.__name__,
                state=state,
            )
            return (_reconstruct_persistent_obj, (meta,), None)

        attrs = {"__reduce__": __reduce__, "__module__": cls.__module__}
        _SUBCLASSES[key] = type(cls.__name__, (cls,), attrs)
    return _SUBCLASSES[key]


def make_persistent(root, classes, module_src=None):
    """Switch every object of root's module tree whose class is in classes to its subclass."""
    for m in root.modules():
        if type(m) in classes:
            m.__class__ = persistent_class(type(m), module_src)
    return root


@contextlib.contextmanager
def recording_init_args(classes):
    """While active, constructors of classes store _init_args and _init_kwargs (outermost wins)."""
    saved = {c: c.__dict__["__init__"] for c in classes if "__init__" in c.__dict__}
    for c, init in saved.items():

        def wrapper(self, *args, _orig=init, **kwargs):
            _orig(self, *args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        c.__init__ = wrapper
    try:
        yield
    finally:
        for c, init in saved.items():
            c.__init__ = init


def _reconstruct_persistent_obj(meta):
    module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
    sys.modules[module.__name__] = module
    exec(meta["module_src"], module.__dict__)
    cls = persistent_class(module.__dict__[meta["class_name"]], meta["module_src"])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"])
    return obj
'''

# A tiny network whose pickled module_src writes a marker file when executed.
TINY_CLASS_SRC = """
import torch


class TinyChild(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n, n))
        self.bias = None
        self.register_buffer("scale", torch.full((n,), 2.0))
        self.register_buffer("cache", torch.zeros(n), persistent=False)
        self.register_buffer("absent", None)


class Tiny(torch.nn.Module):
    def __init__(self, n=3, label_dim=0):
        super().__init__()
        self.n = n
        self.weight = torch.nn.Parameter(torch.randn(n))
        self.blocks = torch.nn.ModuleDict({"b0": TinyChild(n), "b1": TinyChild(n)})
"""

WRITER_SRC = '''
"""Writes EDM-format pickles with the stand-in persistence, and the reference outputs."""

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from odedistill.teachers import networks, precond
from torch_utils import persistence

OUT = Path(sys.argv[1])
SIDE_EFFECT_MARKER, EVIL_MARKER = sys.argv[2], sys.argv[3]
CONFIGS = json.loads(sys.argv[4])
TINY_CLASS_SRC = sys.argv[5]


def module_classes(mod):
    return [
        c
        for c in vars(mod).values()
        if isinstance(c, type) and issubclass(c, torch.nn.Module) and c.__module__ == mod.__name__
    ]


CLASSES = module_classes(networks) + module_classes(precond)


class EDMLoss:
    """Plain persistent object, like EDM's loss_fn."""

    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.P_mean = np.float64(P_mean)
        self.P_std = P_std
        self.sigma_data = sigma_data


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARKER}",))


def edm_network(kwargs, seed):
    torch.manual_seed(seed)
    with persistence.recording_init_args(CLASSES):
        net = precond.build_edm_module("EDMPrecond", kwargs)
    with torch.no_grad():  # EDM zero-initialises output layers; move every weight off zero
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    persistence.make_persistent(net, set(CLASSES))
    return net.eval().requires_grad_(False)


for name, (kwargs, protocol) in CONFIGS.items():
    net = edm_network(kwargs, seed=len(name))
    with persistence.recording_init_args([EDMLoss]):
        loss_fn = EDMLoss()
    loss_fn.__class__ = persistence.persistent_class(EDMLoss)
    data = dict(
        ema=net,
        loss_fn=loss_fn,
        augment_pipe=None,
        dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip",
                            use_labels=kwargs["label_dim"] > 0, xflip=False, resolution=8),
    )
    with open(OUT / f"{name}.pkl", "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g) * 2
    sigma = torch.tensor([0.002, 0.5, 5.0, 80.0])
    if kwargs["label_dim"]:
        labels = torch.eye(kwargs["label_dim"])[[0, 1, 2, 1]]
    else:
        labels = torch.zeros(4, 0)
    with torch.no_grad():
        D = net(x, sigma, labels if kwargs["label_dim"] else None)
    sd = net.state_dict()
    num_params = sum(p.numel() for p in net.parameters())
    tensors = {"x": x, "sigma": sigma, "labels": labels, "D": D}
    tensors.update({"sd." + k: v.contiguous().clone() for k, v in sd.items()})
    meta = {"keys": json.dumps(list(sd)), "num_params": str(num_params)}
    save_file(tensors, OUT / f"{name}.ref.safetensors", metadata=meta)

# module_src with a side effect at import; the class itself is harmless.
ns = {"__name__": "tiny_net"}
exec(TINY_CLASS_SRC, ns)
tiny_src = (
    "import pathlib\\n"
    f"pathlib.Path({SIDE_EFFECT_MARKER!r}).write_text('module_src ran')\\n" + TINY_CLASS_SRC
)
tiny_classes = [ns["Tiny"], ns["TinyChild"]]
torch.manual_seed(0)
with persistence.recording_init_args(tiny_classes):
    tiny = ns["Tiny"](n=3)
sd = tiny.state_dict()
save_file({k: v.contiguous() for k, v in sd.items()}, OUT / "sidefx.ref.safetensors",
          metadata={"keys": json.dumps(list(sd))})
persistence.make_persistent(tiny, set(tiny_classes), module_src=tiny_src)
with open(OUT / "sidefx.pkl", "wb") as f:
    pickle.dump({"ema": tiny}, f, protocol=4)

# A persistent object whose state holds a command.
tiny.blocks["b0"].evil = Evil()
with open(OUT / "nested_evil.pkl", "wb") as f:
    pickle.dump({"ema": tiny}, f, protocol=4)
'''

# Small EDMPrecond networks of the three released families (DDPM++, NCSN++, ADM).
CONFIGS = {
    "ddpmpp": (
        dict(
            img_resolution=8,
            img_channels=3,
            label_dim=10,
            use_fp16=False,
            sigma_min=0,
            sigma_max=float("inf"),
            sigma_data=0.5,
            model_type="SongUNet",
            embedding_type="positional",
            encoder_type="standard",
            decoder_type="standard",
            channel_mult_noise=1,
            resample_filter=[1, 1],
            model_channels=16,
            channel_mult=[1, 2],
            num_blocks=1,
            attn_resolutions=[4],
            dropout=0.0,
            augment_dim=9,
        ),
        4,
    ),
    "ncsnpp": (
        dict(
            img_resolution=8,
            img_channels=3,
            label_dim=0,
            use_fp16=False,
            sigma_data=0.5,
            model_type="SongUNet",
            embedding_type="fourier",
            encoder_type="residual",
            decoder_type="standard",
            channel_mult_noise=2,
            resample_filter=[1, 3, 3, 1],
            model_channels=16,
            channel_mult=[1, 2],
            num_blocks=1,
            attn_resolutions=[4],
            dropout=0.0,
            augment_dim=9,
        ),
        3,
    ),
    "adm": (
        dict(
            img_resolution=8,
            img_channels=3,
            label_dim=5,
            model_type="DhariwalUNet",
            model_channels=32,
            channel_mult=[1, 2],
            num_blocks=1,
            attn_resolutions=[4],
            dropout=0.0,
        ),
        4,
    ),
}
NAMES = list(CONFIGS)


def _env(pythonpath: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _python(*args: str | Path, pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(pythonpath),
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pickles written by a process that has the stand-in torch_utils on its path."""
    root = tmp_path_factory.mktemp("edm")
    lib, out = root / "lib", root / "out"
    (lib / "torch_utils").mkdir(parents=True)
    (lib / "torch_utils" / "__init__.py").write_text("")
    (lib / "torch_utils" / "persistence.py").write_text(PERSISTENCE_SRC)
    (lib / "writer.py").write_text(WRITER_SRC)
    out.mkdir()
    paths = {
        "lib": lib,
        "out": out,
        "side_effect_marker": root / "module_src_ran",
        "evil_marker": root / "evil_ran",
    }
    r = _python(
        lib / "writer.py",
        str(out),
        str(paths["side_effect_marker"]),
        str(paths["evil_marker"]),
        json.dumps(CONFIGS),
        TINY_CLASS_SRC,
        pythonpath=[lib, REPO],
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    assert not paths["side_effect_marker"].exists() and not paths["evil_marker"].exists()
    return paths


@pytest.fixture(scope="module")
def converted(standin: dict[str, Path]) -> dict[str, Path]:
    """Each pickle converted in a fresh process where torch_utils cannot be imported."""
    out = standin["out"]
    code = textwrap.dedent(
        """
        import importlib.util, json, sys
        assert importlib.util.find_spec("torch_utils") is None
        from odedistill.teachers import convert
        out, names = sys.argv[1], json.loads(sys.argv[2])
        for name in names:
            convert(f"{out}/{name}.pkl", f"{out}/{name}.safetensors")
        assert "torch_utils" not in sys.modules
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("_imported_module_"))))
        """
    )
    r = _python("-c", code, out, json.dumps(NAMES), pythonpath=[REPO], cwd=out)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    return {name: out / f"{name}.safetensors" for name in NAMES}


def _reference(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# ---------------------------------------------------------------------------------------------
# Reading and converting.


@pytest.mark.parametrize("name", NAMES)
def test_reader_rebuilds_module_state_dict(standin: dict[str, Path], name: str) -> None:
    ref, meta = _reference(standin["out"] / f"{name}.ref.safetensors")
    ckpt = read_edm_pickle(standin["out"] / f"{name}.pkl")
    assert ckpt.key == "ema" and ckpt.class_name == "EDMPrecond"
    assert list(ckpt.state_dict) == json.loads(meta["keys"])  # module.state_dict() order
    for k, v in ckpt.state_dict.items():
        assert torch.equal(v, ref["sd." + k]), k
    assert ckpt.init_kwargs == json.loads(json.dumps(CONFIGS[name][0]))
    assert ckpt.model_class_name == CONFIGS[name][0]["model_type"]
    assert ckpt.model_init_kwargs["img_resolution"] == 8
    assert ckpt.num_params == int(meta["num_params"])
    assert ckpt.extra["dataset_kwargs"]["resolution"] == 8


@pytest.mark.parametrize("name", NAMES)
def test_converted_teacher_gives_same_outputs(
    standin: dict[str, Path], converted: dict[str, Path], name: str
) -> None:
    ref, _ = _reference(standin["out"] / f"{name}.ref.safetensors")
    labels = ref["labels"] if CONFIGS[name][0]["label_dim"] else None
    for path in (converted[name], standin["out"] / f"{name}.pkl"):
        D = load_teacher(path)
        assert not D.training and not any(p.requires_grad for p in D.parameters())
        with torch.no_grad():
            out = D(ref["x"], ref["sigma"], class_labels=labels)
        torch.testing.assert_close(out, ref["D"], rtol=1e-6, atol=1e-6)
    back = read_converted(converted[name])
    assert back.class_name == "EDMPrecond" and back.key == "ema"
    assert back.init_kwargs == json.loads(json.dumps(CONFIGS[name][0]))
    assert "CC BY-NC-SA" in back.extra["licence"]


def test_load_teacher_dtype(converted: dict[str, Path]) -> None:
    D = load_teacher(converted["ddpmpp"], dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in D.parameters())


def test_mismatched_weights_are_refused(converted: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ckpt = read_converted(converted["ddpmpp"])
    bad = tmp_path / "bad.safetensors"
    meta = {"format": "odedistill-teacher", "format_version": "1", "class_name": "EDMPrecond"}
    kwargs = dict(ckpt.init_kwargs, model_channels=8)
    save_file(ckpt.state_dict, bad, metadata=dict(meta, init_kwargs=json.dumps(kwargs)))
    with pytest.raises(UserError, match="does not match EDMPrecond"):
        load_teacher(bad)
    save_file(ckpt.state_dict, bad, metadata={"format": "something-else"})
    with pytest.raises(UserError, match="not an odedistill teacher file"):
        read_converted(bad)


def test_unknown_class_is_refused_and_nothing_written(
    standin: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "tiny.safetensors"
    with pytest.raises(UserError, match="unsupported EDM network class 'Tiny'"):
        convert(standin["out"] / "sidefx.pkl", out)
    assert list(tmp_path.iterdir()) == []


def test_missing_key_and_file(standin: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no entry 'ema_rampup'.*'loss_fn'"):
        read_edm_pickle(standin["out"] / "ddpmpp.pkl", key="ema_rampup")
    with pytest.raises(UserError, match="no such file"):
        read_edm_pickle(tmp_path / "nope.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"definitely not a pickle")
    with pytest.raises(UserError, match="not a readable EDM pickle"):
        read_edm_pickle(tmp_path / "junk.pkl")


# ---------------------------------------------------------------------------------------------
# Nothing from the file runs.


def test_module_src_is_never_executed(standin: dict[str, Path]) -> None:
    marker = standin["side_effect_marker"]
    ckpt = read_edm_pickle(standin["out"] / "sidefx.pkl")
    assert not marker.exists()
    ref, meta = _reference(standin["out"] / "sidefx.ref.safetensors")
    # Non-persistent and None buffers and None parameters are left out, as state_dict() does.
    assert list(ckpt.state_dict) == json.loads(meta["keys"])
    assert "blocks.b0.cache" not in ckpt.state_dict and "blocks.b0.scale" in ckpt.state_dict
    assert all(torch.equal(v, ref[k]) for k, v in ckpt.state_dict.items())
    assert ckpt.class_name == "Tiny" and ckpt.init_kwargs == {"n": 3}
    assert len(ckpt.module_src_sha256) == 64
    assert not marker.exists()
    # Positive control: EDM's way of loading (execute module_src) does run the payload.
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    r = _python(
        "-c", code, standin["out"] / "sidefx.pkl", pythonpath=[standin["lib"]], cwd=standin["lib"]
    )
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == "module_src ran"
    marker.unlink()


class _Payload:
    """Pickles as ``func(*args)``: what a malicious checkpoint would contain."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, tuple[object, str]]:
    import builtins

    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), "posix.system"),
        "subprocess": (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "exec": (_Payload(builtins.exec, touch), "builtins.exec"),
        "eval": (_Payload(builtins.eval, touch), "builtins.eval"),
        "torch.load": (_Payload(torch.load, str(marker)), "torch.serialization.load"),
    }


@pytest.mark.parametrize("kind", ["os.system", "subprocess", "exec", "eval", "torch.load"])
@pytest.mark.parametrize("nested", [False, True])
def test_code_in_the_pickle_is_refused(tmp_path: Path, kind: str, nested: bool) -> None:
    marker = tmp_path / "ran"
    payload, refused = _payloads(marker)[kind]
    obj = {"ema": {"state": [payload]}} if nested else payload
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(UserError) as info:
        read_edm_pickle(path)
    message = str(info.value)
    assert f"refusing global {refused}" in message and "\n" not in message
    assert not marker.exists()
    if kind in ("os.system", "exec"):  # positive control: plain pickle does run it
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_command_inside_persistent_state_is_refused(standin: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="refusing global posix.system"):
        read_edm_pickle(standin["out"] / "nested_evil.pkl")
    assert not standin["evil_marker"].exists()


def test_tensor_storage_bytes_go_through_weights_only_load(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    inner = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps(_Payload(torch.storage._load_from_bytes, inner), protocol=4))
    with pytest.raises(UserError, match="weights-only load: .*GLOBAL posix.system"):
        read_edm_pickle(path)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # positive control: torch's own _load_from_bytes runs it
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_tensor_outside_its_storage_is_refused(tmp_path: Path) -> None:
    import collections

    storage = torch.arange(4.0).untyped_storage()
    typed = torch.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    path = tmp_path / "oob.pkl"
    for size, stride in (((100,), (1,)), ((2,), (-1,)), ((2, 2), (4, 1))):
        rebuild = _Payload(
            torch._utils._rebuild_tensor_v2,
            typed,
            0,
            size,
            stride,
            False,
            collections.OrderedDict(),
        )
        path.write_bytes(pickle.dumps({"ema": rebuild}, protocol=4))
        with pytest.raises(UserError, match="bad tensor in the pickle"):
            read_edm_pickle(path)


def test_persistent_id_is_refused(tmp_path: Path) -> None:
    class P(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return "x" if obj == "secret" else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as f:
        P(f, protocol=4).dump({"ema": "secret"})
    with pytest.raises(UserError, match="persistent id"):
        read_edm_pickle(path)


def test_state_can_be_set_only_on_record_objects(tmp_path: Path) -> None:
    from odedistill.teachers import edm_pickle, edm_records

    # dnnlib.util.EasyDict (allowed, a dict here) then BUILD with slot state {'pollute': 1}:
    # with a C unpickler this would set an attribute on our own class.
    data = b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x07\x00\x00\x00polluteK\x01s\x86b."
    path = tmp_path / "build.pkl"
    path.write_bytes(data)
    with pytest.raises(UserError, match="refusing to set the state of a type object"):
        read_edm_pickle(path)
    assert not hasattr(edm_records.EasyDictRecord, "pollute")

    class CUnpickler(pickle.Unpickler):  # positive control: same allow-list, C BUILD
        allowed = edm_pickle.EDMUnpickler.allowed
        lookup = edm_pickle.EDMUnpickler.lookup
        refusal = edm_pickle.EDMUnpickler.refusal
        find_class = edm_pickle.EDMUnpickler.find_class

    try:
        with open(path, "rb") as f:
            CUnpickler(f).load()
        assert edm_records.EasyDictRecord.pollute == 1
    finally:
        if hasattr(edm_records.EasyDictRecord, "pollute"):
            del edm_records.EasyDictRecord.pollute


# ---------------------------------------------------------------------------------------------
# The command line.


def test_cli_refuses_bad_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"ema": _Payload(os.system, f"touch {marker}")}, protocol=4))
    out = tmp_path / "out.safetensors"
    r = _python("-m", "odedistill", "convert", str(bad), str(out), pythonpath=[REPO], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "posix.system" in lines[0]
    assert not out.exists() and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pkl"]


def test_cli_converts(
    standin: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from odedistill.cli import main

    out = tmp_path / "ddpmpp.safetensors"
    main(["convert", str(standin["out"] / "ddpmpp.pkl"), str(out)])
    summary = capsys.readouterr().out.strip()
    assert len(summary.splitlines()) == 1
    for part in ("EDMPrecond", "SongUNet", "8x8", "10 classes", "M params", str(out)):
        assert part in summary
    assert read_converted(out).class_name == "EDMPrecond"
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tmp_path / "missing.pkl"), str(tmp_path / "x.safetensors")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: no such file")
