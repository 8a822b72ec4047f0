"""``odedistill eval RUN``: FID of a run's checkpoints and EMAs, written to fid.json and fid.csv."""

from __future__ import annotations

from pathlib import Path

import typer

from odedistill.cli.app import app


@app.command("eval")
def eval_command(
    run: Path = typer.Argument(..., help="run directory"),
    ref: Path = typer.Option(..., "--ref", help="reference statistics .npz (mu, sigma)"),
    detector: Path = typer.Option(
        ..., "--detector", help="local TorchScript Inception (inception-2015-12-05.pt)"
    ),
    ckpt: str = typer.Option("all", "--ckpt", help="'all', 'latest' or steps like 1000,2000"),
    weights: str = typer.Option(
        "all", "--weights", help="'all' (raw and every EMA), 'ema', 'raw', a rate, or a list"
    ),
    num: int = typer.Option(None, "--num", help="images per FID: seeds 0..num-1 (default 50000)"),
    seeds: str = typer.Option(None, "--seeds", help="seeds instead of --num, e.g. 0-49999"),
    batch: int = typer.Option(64, "--batch", help="images per batch"),
    system: str = typer.Option(
        None, "--system", help="a run of your own system class: name it again, module:ClassName"
    ),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Sample every chosen checkpoint and EMA of a run and score it with FID as EDM does.

    Results are merged into RUN/fid.json and RUN/fid.csv; one line per result goes to stdout.
    Under torchrun (WORLD_SIZE > 1) the seeds are sharded across ranks.
    """
    from odedistill.api.fid_runs import evaluate_run
    from odedistill.errors import UserError
    from odedistill.evaluation.results import FID_CSV, FID_JSON, best
    from odedistill.infra import distributed
    from odedistill.infra.devices import resolve_device
    from odedistill.infra.rundir import check_writable_dir
    from odedistill.infra.seeds import parse_seeds

    if batch < 1:
        raise UserError(f"--batch must be at least 1, got {batch}")
    if num is not None and num < 2:
        raise UserError(f"--num must be at least 2 to compute statistics, got {num}")
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if not run.is_dir():
        raise UserError(f"no run directory at {run}")
    check_writable_dir(run, "the run directory (for fid.json)")
    dist, dev_t, _ = distributed.init_from_env(resolve_device(device))
    try:
        records = evaluate_run(
            run,
            ref=ref,
            detector=detector,
            ckpt=ckpt,
            weights=weights,
            num=num,
            seeds=seed_list,
            batch=batch,
            device=dev_t,
            progress=not quiet,
            dist=dist,
            system=system,
        )
        if dist.is_main:
            for r in records:
                typer.echo(f"{r['step']}\t{r['weights']}\t{r['fid']:g}")
            top = best(records)
            message = f"wrote {run / FID_JSON} and {run / FID_CSV}"
            if top is not None:
                message += f"; best: step {top['step']} {top['weights']} FID {top['fid']:g}"
            typer.echo(message, err=True)
    finally:
        distributed.shutdown()
