"""One suite system, one set of distill() options: ``python -m benchmarks.odesuite.screen SYSTEM BUDGET '{"kwarg": value}' [N]``.

Prints one JSON line: steps, evaluations, CPU seconds of training, and the norm-relative
error (median, p95) on the suite's 1000 fresh held-out states (seed 1001) against scipy
(tol 1e-2 unless the options name one);
the same numbers as a row of ``python -m benchmarks.odesuite``, for quick screening. With N
the error is also read on N fresh states (seed 7; ``error_N``, ``p99_N``): a mean that rare
states carry needs many more than 1000 to measure.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

import odedistill
from benchmarks.odesuite.systems import SUITE
from benchmarks.odesuite.training import loadavg, test_set


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    name, budget = argv[0], float(argv[1])
    kw = json.loads(argv[2]) if len(argv) > 2 else {}
    tol = kw.pop("tol", 1e-2)
    system = SUITE[name].build()
    test = test_set(name, 1000, 1001)
    load = loadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", odedistill.AccuracyWarning)
        s = odedistill.distill(
            system, tol=tol, max_seconds=budget, clock="process", progress=False, **kw
        )
    v = s.validation
    with torch.no_grad():
        c = None if test["cond"] is None else test["cond"].float()
        x = s.sample(test["z"].float(), c, steps=v["evaluations"]).double()
    e = odedistill.trajectory_errors(x, test["exact"])
    row = {
        "system": name,
        "budget": budget,
        "tol": tol,
        "kw": kw,
        "steps": v["steps"],
        "ev": v["evaluations"],
        "sec": round(v["seconds"], 1),
        "error": round(e["error"], 4),
        "median": round(e["median"], 4),
        "p95": round(e["p95"], 4),
        "val": round(v["error"], 4),
        "met": v["met"],
        "load": [load, loadavg()],
    }
    if len(argv) > 3:
        n = int(argv[3])
        big = test_set(name, n, 7)
        c = None if big["cond"] is None else big["cond"].float()
        with torch.no_grad():
            x = s.sample(big["z"].float(), c, steps=v["evaluations"]).double()
        per = odedistill.sample_errors(x, big["exact"])
        row.update(
            n=n, error_n=round(float(per.mean()), 4), p99_n=round(float(per.quantile(0.99)), 4)
        )
        row["n_val"] = v.get("n")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
