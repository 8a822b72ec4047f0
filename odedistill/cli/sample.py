"""``odedistill sample``: samples of a student or an EDM teacher by seed, as EDM's generate.py."""

from __future__ import annotations

from pathlib import Path

import typer

from odedistill.cli.app import app


def _parse_times(text: str) -> list[float]:
    from odedistill.errors import UserError

    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise UserError(f"--times expects numbers separated by commas, got {text!r}") from None
    if len(values) < 2:
        raise UserError("--times needs at least two times: t_start and t_end")
    return values


@app.command()
def sample(
    run: Path = typer.Argument(None, help="run directory or checkpoint file of a student"),
    teacher: Path = typer.Option(
        None, "--teacher", help="sample an EDM teacher (.pkl or converted .safetensors) instead"
    ),
    seeds: str = typer.Option(None, "--seeds", help="seeds, e.g. 0-49999 or 0,5,10-19"),
    n: int = typer.Option(None, "--n", help="sugar for --seeds SEED..SEED+N-1 (default 64)"),
    seed: int = typer.Option(None, "--seed", help="first seed of --n (default 0)"),
    out: Path = typer.Option(
        Path("samples.png"),
        "--out",
        help="a folder (one PNG per seed), .npz (all samples) or .png (one picture)",
    ),
    batch: int = typer.Option(64, "--batch", help="samples per batch"),
    subdirs: bool = typer.Option(False, "--subdirs", help="PNGs in one subfolder per 1000 seeds"),
    class_idx: int = typer.Option(
        None, "--class", "--class-labels", help="class label (default: random per seed)"
    ),
    weights: str = typer.Option(
        "ema", "--weights", help="student: 'ema' (first rate), 'raw' or a rate"
    ),
    steps: int = typer.Option(
        None,
        "--steps",
        help="student: K steps of a flow map on its grid (default 1); teacher: Heun steps (18)",
    ),
    times: str = typer.Option(
        None, "--times", help="flow map: the K + 1 times of a K-step sample, e.g. 80,2.5,0.002"
    ),
    sigma_min: float = typer.Option(
        None, "--sigma-min", help="teacher: lowest noise level (0.002)"
    ),
    sigma_max: float = typer.Option(None, "--sigma-max", help="teacher: highest noise level (80)"),
    rho: float = typer.Option(None, "--rho", help="teacher: time step exponent (7)"),
    churn: float = typer.Option(None, "--churn", help="teacher: S_churn (0)"),
    s_min: float = typer.Option(None, "--s-min", help="teacher: S_min (0)"),
    s_max: float = typer.Option(None, "--s-max", help="teacher: S_max (inf)"),
    s_noise: float = typer.Option(None, "--s-noise", help="teacher: S_noise (1)"),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Draw samples by seed from a trained student or a teacher (EDM Algorithm 2).

    A PID student samples in one step; a flow map in --steps K (or on --times).

    Under torchrun (WORLD_SIZE > 1) rank r draws entries r, r + WORLD_SIZE, ... of the seed list.
    """
    from odedistill.errors import UserError
    from odedistill.infra import distributed
    from odedistill.infra.devices import resolve_device
    from odedistill.infra.rundir import check_writable_dir, check_writable_file
    from odedistill.infra.seeds import format_seeds, parse_seeds
    from odedistill.infra.students import read_student
    from odedistill.sampling.samplers import StudentSampler, TeacherSampler
    from odedistill.sampling.writers import output_kind, sample_to

    teacher_opts = {
        "--sigma-min": sigma_min,
        "--sigma-max": sigma_max,
        "--rho": rho,
        "--churn": churn,
        "--s-min": s_min,
        "--s-max": s_max,
        "--s-noise": s_noise,
    }
    if run is None and teacher is None:
        raise UserError("give a RUN (run directory or checkpoint of a student) or --teacher PATH")
    if run is not None and teacher is not None:
        raise UserError("give a RUN or --teacher PATH, not both")
    if run is not None:
        given = [k for k, v in teacher_opts.items() if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to --teacher sampling, not to a student")
    elif times is not None:
        raise UserError("--times applies to a flow-map student, not to --teacher sampling")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if times is not None and steps is not None:
        raise UserError("give --steps or --times, not both")
    time_list = _parse_times(times) if times is not None else None
    if seeds is not None and (n is not None or seed is not None):
        raise UserError("give --seeds or --n/--seed, not both")
    if n is not None and n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if seed is not None and seed < 0:
        raise UserError(f"--seed must be non-negative, got {seed}")
    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if seeds is None:
        first = seed or 0
        seed_list = list(range(first, first + (64 if n is None else n)))
    else:
        seed_list = parse_seeds(seeds)
    if Path(out).suffix not in ("", ".npz", ".png") and not Path(out).is_dir():
        raise UserError(f"--out must be a folder, .npz or .png, got {out.name}")

    dist, dev, _ = distributed.init_from_env(resolve_device(device))
    try:
        if teacher is not None:
            from odedistill.teachers import load_teacher

            if not teacher.is_file():
                raise UserError(f"teacher checkpoint not found: {teacher}")
            kwargs = {
                "num_steps": steps,
                "sigma_min": sigma_min,
                "sigma_max": sigma_max,
                "rho": rho,
                "S_churn": churn,
                "S_min": s_min,
                "S_max": s_max,
                "S_noise": s_noise,
            }
            sampler = TeacherSampler(
                load_teacher(teacher, dev), **{k: v for k, v in kwargs.items() if v is not None}
            )
        else:
            student = read_student(run, weights, dev)
            if student.system is None:
                raise UserError(
                    f"{student.path}: the run's system is a Python object or a user's module, "
                    "which reading a checkpoint never rebuilds; sample it through the library "
                    "(odedistill.load_student(run).attach(YourODE(...)))"
                )
            if time_list is None and steps not in (None, 1):
                time_list = student.sample_times(steps)
            sampler = StudentSampler(student.model, student.system, time_list)
        if output_kind(out, sampler) == "dir":  # check before any sampling
            check_writable_dir(out, "--out")
        else:
            check_writable_file(out, "--out")
        sampler.check_class(class_idx)
        sample_to(
            out,
            sampler,
            seed_list,
            batch=batch,
            class_idx=class_idx,
            subdirs=subdirs,
            progress=not quiet,
            dist=dist,
        )
        if dist.is_main:
            typer.echo(
                f"wrote {len(seed_list)} samples (seeds {format_seeds(seed_list)}, "
                f"{sampler.description}) to {out}",
                err=True,
            )
    finally:
        distributed.shutdown()
