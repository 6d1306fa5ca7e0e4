"""``--recipe auto``: try the recipes that suit the target's neuron and keep the best.

The calibration data are split (seeded) into a fitting part and a held-out part (a quarter).
Activation statistics are collected once on the fitting part; every candidate recipe of the
target's neuron profile (``candidate_recipes``) is built from them, with its corrections fitted
on the same part, and simulated on the held-out part with the reference simulator. Its outputs
are compared with the ANN's on the same samples (the frontend's executor, which matches
onnxruntime): no labels are needed.

* With ``timesteps`` T: the best recipe has the highest argmax agreement with the ANN at T; ties go
  to the smaller mean |SNN − ANN| output error at T. Corrections are fitted for T steps.
* Without: the best recipe has the smallest T of 1, 2, 4, … ``SEARCH_T_MAX`` from which the
  agreement stays ≥ 1 − ε (ε = 1 pp); ties go to the higher mean agreement over those T.

The winner is then rebuilt on all the calibration data, and the search (what was tried, the
figures, the choice) goes into the SNN graph's metadata under ``recipe_search``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.convert.bias_correction import GAIN_ROUNDS, MAX_SAMPLES
from onnx2snn.convert.calibrate import collect_stats
from onnx2snn.convert.pipeline import Conversion, build_snn, convert_ann, prepare_ann
from onnx2snn.convert.profiles import NeuronProfile
from onnx2snn.convert.recipe import Recipe, RecipeError
from onnx2snn.ir.graph import Graph
from onnx2snn.progress import progress_bar

HELD_OUT_FRACTION = 0.25
MIN_SAMPLES = 8  # below this a held-out part says nothing
SEARCH_T_MAX = 64  # the grid searched when no T is given: 1, 2, 4, ..., 64
EPSILON_PP = 1.0
# What the search may cost when nobody asked for it (convert's default): multiply-accumulates of
# the simulations it runs (``search_cost``). Measured on two shared cores (docs/conversion.md §6):
# the MNIST ResNet's subtractive search, 1.4e11, takes about 20-30 s; reset-to-zero searches (gain
# calibration, 64 steps) take several times longer per MAC (per-step neuron updates, which MACs do
# not count), and the MNIST ResNet's, 5.4e11, took 15 min under load. 1.5e11 keeps every
# subtractive search of the bundled models and the reset-to-zero ones of the digits models; a
# CIFAR ResNet-18 (1e13) or ResNet-50 does not fit.
DEFAULT_SEARCH_BUDGET_MACS = 1.5e11


def candidate_recipes(profile: NeuronProfile, base: Recipe,
                      timesteps: int | None = None) -> dict[str, Recipe]:
    """The recipes tried for ``profile``, labelled; ``base`` gives the options not searched
    (max pooling, the ceiling); corrections simulate ``timesteps`` steps (or 32 / 8)."""
    steps = timesteps or 32
    short = timesteps or 8
    found: dict[str, Recipe]
    if profile.reset == "zero":
        zero = Recipe(reset="zero", gain_calibration=True, correction_steps=timesteps or 64)
        found = {
            "p99.9": Recipe(reset="zero"),
            "p99.9, gain cal.": zero,
            "p99.99, gain cal.": dataclasses.replace(zero, percentile=99.99),
            "max, gain cal.": dataclasses.replace(zero, norm="max"),
            "max, gain cal., bias corr.": dataclasses.replace(zero, norm="max",
                                                              bias_correction=True),
        }
        if profile.initial_potential:
            found["max, v0=θ/2, gain cal."] = dataclasses.replace(zero, norm="max", v0="half")
    elif profile.reset == "graded":
        found = {"p99.9": Recipe(), "p99.99": Recipe(percentile=99.99), "max": Recipe(norm="max")}
    elif not profile.initial_potential:
        found = {"p99.9": Recipe(), "p99.99": Recipe(percentile=99.99),
                 "channel p99.9": Recipe(norm="channel-percentile"),
                 "p99.9, bias corr.": Recipe(bias_correction=True, correction_steps=steps)}
    else:
        half = Recipe(v0="half")
        found = {
            "p99.9, v0=0": Recipe(),
            "p99.9, v0=θ/2": half,
            "p99.99, v0=θ/2": dataclasses.replace(half, percentile=99.99),
            "channel p99.9, v0=θ/2": dataclasses.replace(half, norm="channel-percentile"),
            # the bias takes the steady error, the calibrated v0 the transient (a charge)
            "p99.9, v0 calibrated, bias corr.": Recipe(v0="calibrated", bias_correction=True,
                                                       correction_steps=steps),
            f"p99.9, v0 calibrated ({short} steps)": Recipe(v0="calibrated",
                                                            correction_steps=short),
        }
    return {label: dataclasses.replace(r, maxpool=base.maxpool, use_ceiling=base.use_ceiling)
            for label, r in found.items()}


@dataclass
class Trial:
    """One candidate recipe and how its SNN did on the held-out samples."""

    label: str
    recipe: Recipe
    agreement: dict[int, float]  # per T: fraction of argmax equal to the ANN's
    error: dict[int, float]  # per T: mean |SNN output − ANN output|
    seconds: float
    score: tuple[float, float] = (0.0, 0.0)  # smaller is better

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"label": self.label, "recipe": self.recipe.to_dict(),
                "agreement": {str(t): a for t, a in self.agreement.items()},
                "mean_abs_error": {str(t): e for t, e in self.error.items()},
                "seconds": self.seconds}


@dataclass
class RecipeSearch:
    """What ``--recipe auto`` tried and chose."""

    profile: str
    timesteps: int | None
    fit_samples: int
    held_out_samples: int
    trials: list[Trial] = field(default_factory=list)
    chosen: str = ""

    @property
    def grid(self) -> list[int]:
        """The T at which the trials were read."""
        return [self.timesteps] if self.timesteps else _grid()

    def criterion(self) -> str:
        """The rule that picked the winner, in words."""
        if self.timesteps:
            return (f"highest agreement with the ANN at T={self.timesteps} on the held-out "
                    "samples (ties: smaller output error)")
        return (f"smallest T from which the agreement with the ANN stays ≥ {100 - EPSILON_PP:g} % "
                "on the held-out samples (ties: higher mean agreement)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the SNN graph's metadata as ``recipe_search``)."""
        return {"profile": self.profile, "timesteps": self.timesteps,
                "criterion": self.criterion(), "fit_samples": self.fit_samples,
                "held_out_samples": self.held_out_samples, "chosen": self.chosen,
                "trials": [t.to_dict() for t in self.trials]}

    def table(self) -> list[str]:
        """Markdown table of the trials (agreement in %, per T), the chosen one marked."""
        ts = self.grid
        head = ["recipe"] + [f"T={t}" for t in ts] + ["seconds", ""]
        lines = ["| " + " | ".join(head) + " |",
                 "| --- | " + " | ".join("---:" for _ in ts) + " | ---: | --- |"]
        for tr in self.trials:
            cells = [tr.label] + [f"{100 * tr.agreement[t]:.1f}" for t in ts] + [
                f"{tr.seconds:.1f}", "chosen" if tr.label == self.chosen else ""]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def format(self) -> str:
        """The table with a heading saying what was compared."""
        return "\n".join([
            f"recipe search ({self.profile} neurons): agreement with the ANN (%) on "
            f"{self.held_out_samples} held-out calibration samples, fitted on "
            f"{self.fit_samples}", f"choice: {self.criterion()}", ""] + self.table()
            + ["", f"chosen: {self.chosen}"])


def _grid() -> list[int]:
    return [2**k for k in range(int(math.log2(SEARCH_T_MAX)) + 1)]


def _score(trial: Trial, timesteps: int | None) -> tuple[float, float]:
    if timesteps:
        return (-trial.agreement[timesteps], trial.error[timesteps])
    ok = 1.0 - EPSILON_PP / 100 - 1e-12
    first = math.inf
    for t in reversed(_grid()):
        if trial.agreement[t] < ok:
            break
        first = t
    return (first, -float(np.mean(list(trial.agreement.values()))))


def search_cost(ann: Graph, n_calib: int, profile: NeuronProfile, base: Recipe,
                timesteps: int | None = None) -> float:
    """Estimated multiply-accumulates of ``search_recipe``: every candidate simulated on the
    held-out part for T (or ``SEARCH_T_MAX``) steps, plus its corrections (bias, v0 or gain
    calibration), which simulate each population's region alone (``bias_correction``): about
    the whole network once per round and once more to record what it sends, on at most
    ``MAX_SAMPLES`` fitting samples for the candidate's correction steps."""
    macs = float(ann.macs())
    n_held = max(1, int(round(n_calib * HELD_OUT_FRACTION)))
    n_fit = min(n_calib - n_held, MAX_SAMPLES)
    t_sim = timesteps or SEARCH_T_MAX
    cost = 0.0
    for recipe in candidate_recipes(profile, base, timesteps).values():
        cost += n_held * t_sim * macs
        runs = ((GAIN_ROUNDS + 1) * recipe.gain_calibration + 2 * recipe.bias_correction
                + 2 * (recipe.v0 == "calibrated"))
        cost += n_fit * recipe.correction_steps * macs * runs
    return cost


def default_search_skipped(ann: Graph, n_calib: int, profile: NeuronProfile, base: Recipe,
                           timesteps: int | None = None) -> str:
    """Why convert's default (a search nobody asked for) should not run, or "" when it should:
    too few calibration samples to hold some out, or an estimated cost (``search_cost``) over
    ``DEFAULT_SEARCH_BUDGET_MACS``. The caller then uses the profile's measured recipe."""
    fallback = f"using the {profile.name} neuron's measured recipe"
    if n_calib < MIN_SAMPLES:
        return (f"not searching recipes: {n_calib} calibration samples are too few to hold some "
                f"out (at least {MIN_SAMPLES}); {fallback}")
    cost = search_cost(ann, n_calib, profile, base, timesteps)
    if cost > DEFAULT_SEARCH_BUDGET_MACS:
        return (f"not searching recipes (--recipe auto would simulate about {cost:.1e} "
                f"multiply-accumulates, over the default's {DEFAULT_SEARCH_BUDGET_MACS:.0e}): "
                f"{fallback}; pass --recipe auto to search anyway (fewer calibration samples "
                "make it cheaper)")
    return ""


def search_recipe(ann: Graph, calib: np.ndarray, profile: NeuronProfile, base: Recipe, *,
                  timesteps: int | None = None, batch_size: int = 256, seed: int = 0,
                  show_progress: bool = False,
                  log: Callable[[str], None] | None = None,
                  candidates: Mapping[str, Recipe] | None = None,
                  ) -> tuple[Conversion, RecipeSearch]:
    """Try ``candidates`` (default: ``candidate_recipes``; the CLI passes those the target can
    express, ``onnx2snn.convert.preflight``) on held-out calibration data; return the winner's
    conversion (rebuilt on all of ``calib``) and the search."""
    from onnx2snn.backends.numpy.simulator import simulate  # the reference simulator

    if len(calib) < MIN_SAMPLES:
        raise RecipeError(f"--recipe auto needs at least {MIN_SAMPLES} calibration samples to "
                          f"hold some out, got {len(calib)}; give more or choose a recipe")
    if timesteps is not None and timesteps < 1:
        raise RecipeError("--timesteps must be at least 1")
    order = np.random.default_rng(seed).permutation(len(calib))
    n_held = max(1, int(round(len(calib) * HELD_OUT_FRACTION)))
    held, fit = calib[order[:n_held]], calib[order[n_held:]]
    prepared = prepare_ann(ann, fit, base, batch_size)
    with progress_bar(len(fit), "calibrating", show_progress) as update:
        stats = collect_stats(prepared, fit, batch_size=batch_size, progress=update)
    reference = run_ann(ann, held)[ann.outputs[0]].reshape(len(held), -1)
    ref_arg = reference.argmax(axis=1)
    search = RecipeSearch(profile.name, timesteps, len(fit), len(held))
    t_sim = timesteps or SEARCH_T_MAX
    if candidates is None:
        candidates = candidate_recipes(profile, base, timesteps)
    if not candidates:
        raise RecipeError("no candidate recipe to search")
    with progress_bar(len(candidates), "trying recipes", show_progress, unit="recipe") as update:
        for label, recipe in candidates.items():
            start = time.perf_counter()
            snn = build_snn(prepared, stats, recipe, fit).snn
            pred = simulate(snn, held, t_sim, batch_size=batch_size).predictions[snn.outputs[0]]
            ts = search.grid
            out = {t: pred[t - 1].reshape(len(held), -1) for t in ts}
            trial = Trial(label, recipe,
                          {t: float((out[t].argmax(axis=1) == ref_arg).mean()) for t in ts},
                          {t: float(np.abs(out[t] - reference).mean()) for t in ts},
                          time.perf_counter() - start)
            trial.score = _score(trial, timesteps)
            search.trials.append(trial)
            if log is not None:
                log(f"  {label}: " + ", ".join(f"T={t} {100 * a:.1f} %"
                                                for t, a in trial.agreement.items()))
            update(1)
    best = min(search.trials, key=lambda tr: tr.score)  # first of equals: the list's order
    search.chosen = best.label
    conv = convert_ann(ann, calib, best.recipe, batch_size=batch_size,
                       show_progress=show_progress)
    snn = conv.snn.with_nodes(conv.snn.nodes, recipe_search=search.to_dict())
    return Conversion(conv.ann, snn, conv.stats), search
