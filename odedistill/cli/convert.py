"""``odedistill convert EDM.pkl OUT.safetensors``: an EDM checkpoint as safetensors, no code run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from odedistill.cli.app import app


@app.command("convert")
def convert_command(
    pkl: Annotated[
        Path,
        typer.Argument(
            metavar="EDM.pkl", help="EDM checkpoint, e.g. edm-cifar10-32x32-uncond-vp.pkl."
        ),
    ],
    out: Annotated[Path, typer.Argument(metavar="OUT.safetensors", help="The file to write.")],
    key: Annotated[str, typer.Option("--key", help="Entry of the pickle to convert.")] = "ema",
) -> None:
    """Convert an EDM .pkl to .safetensors without executing anything from the pickle.

    The weights keep the checkpoint's licence (EDM: CC BY-NC-SA 4.0).
    """
    from rich.console import Console
    from rich.markup import escape

    from odedistill.infra.rundir import check_writable_file
    from odedistill.teachers.load import convert

    check_writable_file(out, "the output")
    ckpt = convert(pkl, out, key=key)
    kwargs = ckpt.init_kwargs
    resolution = kwargs.get("img_resolution")
    parts = [ckpt.class_name]
    if ckpt.model_class_name:
        parts.append(ckpt.model_class_name)
    if isinstance(resolution, int):
        parts.append(f"{resolution}x{resolution}")
    if kwargs.get("label_dim"):
        parts.append(f"{kwargs['label_dim']} classes")
    parts.append(f"{ckpt.num_params / 1e6:.1f}M params")
    entry = f"[{ckpt.key!r}]" if ckpt.key else ""
    summary = f"{pkl.name}{entry} ({', '.join(parts)}) -> {out}"
    Console(soft_wrap=True, highlight=False).print(f"[green]converted[/green] {escape(summary)}")
