"""Settings of the residual-family benchmark: the problems, the families, their budgets, the presets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

#: the evaluation's numbers of network evaluations (a K-step flow-map sample costs K)
NFES = [1, 2, 4, 8]
#: the score every curve of the report is drawn in: relative error against the exact flow map
ERR = "trajectory_rel_error"


def log_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Problem:
    """One problem: the built-in flow-map recipe it starts from and what is changed."""

    name: str
    recipe: str
    overrides: list[str]
    about: str = ""


@dataclass
class Family:
    """One residual family (or combination) with its scheme: the recipe overrides that select it.

    A family the recipe schema does not know (its fields are refused) is reported as not
    available rather than run.
    """

    name: str
    overrides: list[str]
    about: str = ""
    problems: list[str] | None = None  # run on these problems only (None: all)
    #: the main family this is a setting of (its scheme, weights or stabiliser): the targets
    #: judge each main family at its best setting per problem
    variant_of: str | None = None

    @property
    def ablation(self) -> bool:
        return self.problems is not None


def problems(width: int, depth: int, channels: int, heldout: int, quick: bool) -> list[Problem]:
    mlp = [f"student.width={width}", f"student.depth={depth}", f"eval.n_heldout={heldout}"]
    return [
        Problem(
            "ring",
            "flowmap",
            [*mlp, f"scheme.N={20 if quick else 250}"],
            "probability-flow ODE of the exact 8-mode ring mixture (std 0.05), Karras grid",
        ),
        Problem(
            "digits",
            "digits_flowmap",
            [
                f"student.channels={channels}",
                f"train.batch={8 if quick else 64}",
                f"scheme.N={20 if quick else 100}",
                f"eval.n_heldout={min(heldout, 256)}",
                "eval.nfe=[1, 2, 4, 8]",
            ],
            "probability-flow ODE of the exact mixture on 1x8x8 digit images, small UNet",
        ),
        Problem(
            "pendulum",
            "flowmap",
            [
                *mlp,
                "system.kind='pendulum'",
                "student.skip='none'",
                "scheme.grid='uniform'",
                f"scheme.N={20 if quick else 64}",
            ],
            "damped pendulum over [0, 1] (no diffusion), uniform grid",
        ),
        Problem(
            "lotka",
            "flowmap",
            [
                *mlp,
                "system.kind='benchmarks.odesuite.systems:LotkaVolterra'",
                "system.path='.'",
                "student.skip='none'",
                "scheme.grid='uniform'",
                "scheme.N=16",
            ],
            "Lotka-Volterra from the odesuite over [0, 2], uniform grid",
        ),
    ]


#: the Eulerian family's residual and scheme, which its stabilised variants extend
EULERIAN = ["student.residual='eulerian'", "scheme.kind='autodiff'"]

#: the families compared, each with its scheme; ``problems``: run on these only (None: all)
FAMILIES = [
    Family(
        "lagrangian",
        ["student.residual='lagrangian'", "scheme.kind='upwind'"],
        "∂_t X = f(X, t): the teacher at the map's output, upwind (PID's scheme)",
    ),
    Family(
        "eulerian",
        [*EULERIAN],
        "∂_s X + ∇_x X·f(x_s, s) = 0: the teacher at the source, one JVP along (f, 1), "
        "stop-gradient target (sCM)",
    ),
    Family(
        "semigroup",
        [
            "student.residual='semigroup'",
            "student.residual_weights=[1, 0, 1]",
            "scheme.kind='upwind'",
        ],
        "X(x_s, s, t) = sg X(X(x_s, s, u), u, t) at a random midpoint u, beside the Lagrangian "
        "residual (the semigroup alone is solved by the identity)",
    ),
    Family(
        "lagrangian+eulerian",
        [
            "student.residual='lagrangian'",
            "student.residual_weights=[1, 1, 0]",
            "scheme.kind='autodiff'",
        ],
        "the sum of the Lagrangian and the Eulerian residuals, both by autodiff",
    ),
    Family(
        "eulerian, forward difference",
        ["student.residual='eulerian'", "scheme.kind='upwind'"],
        "the Eulerian residual by a forward difference along (f, 1) (student.fd_step)",
        problems=["ring", "pendulum"],
        variant_of="eulerian",
    ),
    # sCM's stabilisers of the Eulerian residual, each measured beside it: the target's shift
    # g normalised (g/(‖g‖ + c)) or clipped (‖g‖ <= c), the learned loss weight, and dense s
    *(
        Family(
            f"eulerian, {name}",
            [*EULERIAN, *extra],
            about,
            problems=["ring", "pendulum"],
            variant_of="eulerian",
        )
        for name, extra, about in [
            (
                "normalised tangent",
                ["student.tangent='normalise'"],
                "the Eulerian family with sCM's tangent normalisation g/(‖g‖ + c), c = 0.1",
            ),
            (
                "clipped tangent",
                ["student.tangent='clip'"],
                "the Eulerian family with the shift's norm clipped at c = 0.1",
            ),
            (
                "adaptive weight",
                ["student.adaptive_weight=true"],
                "the Eulerian family with sCM's learned loss weight w(s, t) (e^{-w} loss + w)",
            ),
            (
                "uniform times, normalised tangent",
                ["student.tangent='normalise'", "student.sources='uniform'"],
                "the Eulerian family with s at any grid point, t anywhere after it (dense s, "
                "where the raw tangent diverged), normalised",
            ),
        ]
    ),
    # the semigroup's rise with K on the ring: its weight, and sources at every grid point (its
    # midpoint u is anywhere between s and t, where the sampler's sources never put s)
    Family(
        "semigroup, weight 0.25",
        [
            "student.residual='semigroup'",
            "student.residual_weights=[1, 0, 0.25]",
            "scheme.kind='upwind'",
        ],
        "the semigroup residual at a quarter of the Lagrangian one's weight",
        problems=["ring", "pendulum"],
        variant_of="semigroup",
    ),
    Family(
        "semigroup, uniform sources",
        [
            "student.residual='semigroup'",
            "student.residual_weights=[1, 0, 1]",
            "scheme.kind='upwind'",
            "student.sources='uniform'",
        ],
        "the semigroup family with s at any grid point, t anywhere after it",
        problems=["ring"],
    ),
    # the per-jump floor: X = w x_s + (1 − w) F weighs a jump's network error by 1 − w =
    # (s − t)/(s − t_anchor), about 1 on the last jumps however short; X = x_s − (s − t) u
    # weighs it by the jump's length
    Family(
        "lagrangian, average velocity",
        [
            "student.residual='lagrangian'",
            "scheme.kind='upwind'",
            "student.output='average_velocity'",
            "student.skip='none'",
        ],
        "the Lagrangian family with the network as the average velocity u (X = x_s − (s − t) u)",
        problems=["ring", "pendulum"],
    ),
    # the scheme of the Lagrangian residual: an upwind-trained map reproduces the teacher's
    # explicit Euler on the collocation grid (PID's Theorem 1), so its multi-step samples level
    # off at that Euler solution's error; second-order and exact derivatives remove that floor
    *(
        Family(
            f"{name}, {scheme}",
            [*overrides, f"scheme.kind='{scheme}'"],
            f"{about}, by the {scheme} scheme",
            problems=["ring", "pendulum", "lotka"],
            variant_of=main,
        )
        for name, main, overrides, about in [
            (
                "lagrangian",
                "lagrangian",
                ["student.residual='lagrangian'"],
                "the Lagrangian family",
            ),
            (
                "semigroup, weight 0.25",
                "semigroup",
                ["student.residual='semigroup'", "student.residual_weights=[1, 0, 0.25]"],
                "the semigroup at a quarter weight",
            ),
        ]
        for scheme in ("central", "autodiff")
    ),
    # ablations of the flat multi-step error: where the sources and the times come from
    Family(
        "lagrangian, marginal sources",
        ["scheme.kind='upwind'", "student.source_state='marginal'"],
        "exact marginal samples as x_s instead of the student's own jumps",
        problems=["ring", "digits"],
    ),
    Family(
        "lagrangian, uniform times",
        ["scheme.kind='upwind'", "student.sources='uniform'"],
        "s at any grid point, t anywhere after it",
        problems=["ring", "digits"],
    ),
]

#: the reference of the cost ratios
REFERENCE = "lagrangian"


def main_family(name: str) -> str | None:
    """The main family that the family ``name`` is a setting of (itself for a main family);
    None for an ablation of sources, times or output, and for a name no longer listed."""
    for f in FAMILIES:
        if f.name == name:
            return f.variant_of or (None if f.ablation else f.name)
    return None


@dataclass
class ResidualBenchSettings:
    """Every knob of the benchmark. ``full()`` and ``quick()`` are the two presets."""

    preset: str = "full"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 1
    budget: float = 20.0  # process CPU seconds of training steps per run (all families alike)
    problems: list[Problem] = field(default_factory=list)
    families: list[Family] = field(default_factory=lambda: list(FAMILIES))
    grad_batches: int = 8  # independent batches for the gradient variance
    diagnose_n: int = 128  # held-out states of the error-by-start diagnosis
    cost_warmup: int = 2
    cost_repeats: int = 5
    cost_iters: int = 5

    @classmethod
    def full(cls) -> ResidualBenchSettings:
        return cls(problems=problems(128, 3, 16, 1000, quick=False))

    @classmethod
    def quick(cls) -> ResidualBenchSettings:
        return cls(
            preset="quick",
            seeds=[0],
            budget=0.5,
            problems=problems(16, 1, 8, 64, quick=True),
            grad_batches=2,
            diagnose_n=16,
            cost_warmup=1,
            cost_repeats=1,
            cost_iters=1,
        )
