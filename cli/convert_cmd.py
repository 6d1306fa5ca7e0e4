"""``onnx2snn convert MODEL.onnx --target T --calib DATA -o OUT/``: calibrate, convert, emit.

The library does the work (``onnx2snn.convert``, the target's backend, ``onnx2snn.artifacts``);
this module only maps options to a ``Recipe`` and reports what was written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from onnx2snn.artifacts import write_output_folder
from onnx2snn.backends import REGISTRY, cannot_express, get_backend
from onnx2snn.cli.common import (
    drop_option,
    model_argument,
    nir_for_option,
    output_option,
    verbose_option,
    warn,
    warn_dropped,
)
from onnx2snn.cli.interrupt import exits_on_interrupt
from onnx2snn.convert import Conversion, Recipe, convert_ann
from onnx2snn.convert.auto import (
    RecipeSearch,
    candidate_recipes,
    default_search_skipped,
    search_recipe,
)
from onnx2snn.convert.preflight import expressible_recipes
from onnx2snn.convert.profiles import profile_for
from onnx2snn.convert.recipe import MAXPOOLS, NORMS, RESETS, V0S
from onnx2snn.data import load_dataset
from onnx2snn.frontend import convert_model, load_model
from onnx2snn.ir.graph import Graph
from onnx2snn.oracle import chosen_output, reference_note

TARGET_DEFAULT = "the target neuron's recipe (docs/conversion.md)"


def recipe_options(f: Any) -> Any:
    """The conversion recipe's options for convert: unset knobs come from the target's recipe."""
    return recipe_options_defaulting_to(TARGET_DEFAULT)(f)


def recipe_options_defaulting_to(default: str) -> Callable[[Any], Any]:
    """The conversion recipe's options (shared by convert and compare). The searched knobs default
    to None: "not given", filled in by ``make_recipe`` from a base recipe that ``default`` (help
    text) names."""
    options = [
        click.option("--norm", type=click.Choice(NORMS), default=None,
                     help="How each layer's scale λ comes from calibration activations: max, "
                          f"p-th percentile of the layer, or one percentile per channel. "
                          f"Default: {default}."),
        click.option("--percentile", type=float, default=None,
                     help="p for --norm percentile / channel-percentile (99.9; 99.99 for deep "
                          "nets)."),
        click.option("--reset", type=click.Choice(RESETS), default=None,
                     help="Reset after a spike: subtract the threshold (keeps the residue) or "
                          f"set the potential to zero. Default: {default}."),
        click.option("--v0", type=click.Choice(V0S), default=None,
                     help="Initial membrane potential: zero, half the threshold (faster "
                          "convergence at small T), or calibrated per neuron on the calibration "
                          f"data (Li et al. 2021). Default: {default}."),
        click.option("--maxpool", type=click.Choice(MAXPOOLS), default="gate", show_default=True,
                     help="Max pooling: gate (pass the most active input's spikes), avg "
                          "(replace by average pooling; changes the function) or error."),
        click.option("--ceiling/--no-ceiling", default=True, show_default=True,
                     help="Bound the scale λ of Clip(0, c) / ReLU6 layers by their ceiling: "
                          "λ = min(c, the --norm statistic)."),
        click.option("--bias-correction/--no-bias-correction", default=None,
                     help="Correct each layer's bias from ANN-vs-SNN mean activations on the "
                          f"calibration data (Li et al. 2021). Default: {default}."),
        click.option("--gain-calibration/--no-gain-calibration", default=None,
                     help="Raise each channel's spike worth until its mean output meets the "
                          "ANN's on the calibration data (for reset-to-zero neurons). Default: "
                          f"{default}."),
        click.option("--correction-steps", type=click.IntRange(1), default=None,
                     help="Time steps simulated for the corrections (bias, v0, gain); default "
                          "--timesteps if given, else the target neuron's recipe's (32 or 64)."),
        click.option("--calib-samples", type=click.IntRange(1), default=512, show_default=True,
                     help="Use at most this many calibration samples."),
        click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
                     help="Samples per batch during calibration (compare: also per shard "
                          "of the simulations)."),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


SEARCHED = ("norm", "percentile", "reset", "v0", "bias_correction", "gain_calibration",
            "correction_steps")


def make_recipe(base: Recipe, maxpool: str, ceiling: bool, **given: Any) -> Recipe:
    """``base`` with the recipe options given on the command line (None: not given)."""
    values = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(base, maxpool=maxpool, use_ceiling=ceiling, **values)


@click.command()
@model_argument
@click.option("--target", "-t", type=click.Choice(list(REGISTRY)), default="numpy",
              show_default=True, help="Backend whose artifact to write.")
@click.option("--calib", "calib_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration data: .npz with x (N, *input shape) [and y], or .npy of x.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (created; an earlier onnx2snn output there is replaced).")
@click.option("--recipe", "recipe_mode", type=click.Choice(["auto", "target"]), default=None,
              help="auto: try the recipes that suit the target's neuron on a held-out quarter of "
                   "the calibration data, print what was tried, keep the best (at --timesteps "
                   "T, or the smallest T within 1 pp of the ANN). target: the target neuron's "
                   "measured recipe. Default: auto, or target when a recipe option (--norm, "
                   "--v0, ...) is given.")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=None,
              help="The number of time steps you will run: --recipe auto picks the best recipe "
                   "for it, and the corrections are fitted for it.")
@recipe_options
@drop_option
@output_option
@click.option("--neuron", type=click.Choice(["sdnn", "lif", "if-subtract"]), default="sdnn",
              show_default=True,
              help="--target loihi: neuron model. sdnn (sigma-delta, graded spikes; deployable), "
                   "lif (binary spikes, reset to zero; deployable), if-subtract (reset by "
                   "subtraction: a custom Lava process, simulation only, cannot be deployed).")
@click.option("--nir-reset", type=click.Choice(["zero", "exact"]), default="zero", show_default=True,
              help="--target nir: zero (NIR IF, reset to 0; read by every consumer) or exact "
                   "(reset by subtraction as I -> Threshold -> Scale; see docs/nir.md).")
@click.option("--nir-pool", type=click.Choice(["sum", "avg"]), default="sum", show_default=True,
              help="--target nir: average pooling as SumPool2d (1/k² folded into the next "
                   "weights) or AvgPool2d.")
@nir_for_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@verbose_option
@exits_on_interrupt
def convert_cmd(model: str, target: str, calib_path: str, out_dir: str, recipe_mode: str | None,
                timesteps: int | None, maxpool: str, ceiling: bool, calib_samples: int,
                batch_size: int, drop_ops: tuple[str, ...], output: str | None, neuron: str,
                nir_reset: str, nir_pool: str, nir_for: str, quiet: bool, **given: Any) -> None:
    """Calibrate MODEL.onnx on data and convert it to a spiking network for a target.

    The recipe follows the target's neuron (reset by subtraction, reset to zero, graded): by
    default several recipes that suit it are tried on held-out calibration data and the best is
    kept (--recipe auto; the table goes to the report). Writes OUT/network.snn (the SNN graph),
    OUT/source.onnx (the ANN, used by evaluate), OUT/report.md, OUT/onnx2snn.json and the
    target's own files.

    A network the target cannot express (max pooling on Loihi or in NIR, ...) is refused before
    calibration, naming the nodes and the fix: exit code 4, nothing written.

    Example: onnx2snn convert models/digits_cnn.onnx --calib models/digits_calib.npz -o out/ -T 16
    """
    warn_dropped(drop_ops)
    explicit = sorted(k for k in SEARCHED if given.get(k) is not None)
    if recipe_mode == "auto" and explicit:
        raise click.UsageError("--recipe auto chooses " + ", ".join(
            "--" + k.replace("_", "-") for k in explicit) + " itself: drop them, or use "
            "--recipe target with them")
    mode = recipe_mode or ("target" if explicit else "auto")
    profile = profile_for(target, neuron, nir_reset, nir_for)
    if timesteps is not None and given.get("correction_steps") is None:
        given["correction_steps"] = timesteps
    recipe = make_recipe(profile.recipe, maxpool, ceiling, **given)
    if mode == "target":
        for problem in profile.check(recipe):
            warn(problem)
    backend = get_backend(target)
    loaded = load_model(model)
    ann = convert_model(loaded, drop_ops, output)
    # said now, not first in evaluate: which ANN reference evaluate and compare will use
    oracle_note = reference_note(model, chosen_output(ann.meta))
    if oracle_note:
        warn(oracle_note)
    calib = load_dataset(calib_path, ann[ann.inputs[0]].shape, limit=calib_samples)
    search: RecipeSearch | None = None
    search_note = ""
    if recipe_mode is None and mode == "auto":
        search_note = default_search_skipped(ann, len(calib.x), profile, recipe, timesteps)
        if search_note:
            mode = "target"
            warn(search_note)
    target_options: dict[str, Any] = (
        {"neuron": neuron, "calib_x": calib.x} if target == "loihi" else
        {"nir_reset": nir_reset, "nir_pool": nir_pool, "nir_for": nir_for} if target == "nir"
        else {})

    def check(snn: Graph) -> list[str]:
        return backend.check(snn, **target_options)

    # before calibration and the search: every recipe they would build must be expressible
    candidates = (candidate_recipes(profile, recipe, timesteps) if mode == "auto"
                  else {"the recipe": recipe})
    candidates, refused = expressible_recipes(ann, calib.x, candidates, target, check, batch_size)
    for label, problems in refused.items():
        warn(f"--recipe auto does not try {label}: the {target} target cannot express it ("
             + "; ".join(problems) + ")")
    if mode == "auto":
        conv, search = search_recipe(ann, calib.x, profile, recipe, timesteps=timesteps,
                                     batch_size=batch_size, show_progress=not quiet,
                                     candidates=candidates)
        recipe = Recipe.from_dict(conv.snn.meta["recipe"])
    else:
        conv = convert_ann(ann, calib.x, recipe, batch_size=batch_size, show_progress=not quiet)
    problems = check(conv.snn)  # again: some problems depend on the calibrated values
    if problems:
        raise cannot_express(target, problems)
    report = conversion_report(conv, target, model, len(calib), search, search_note)
    written = write_output_folder(
        out_dir, conv.snn, model,
        {"target": target, "recipe": recipe.to_dict(), "source_sha256": loaded.sha256,
         "calibration_samples": len(calib), "source_name": Path(model).name,
         "output": chosen_output(ann.meta), "ann_reference": "onnx2snn executor" if oracle_note
         else "onnxruntime", "neuron_profile": profile.name,
         "recipe_search": None if search is None else search.to_dict(),
         "recipe_search_skipped": search_note or None},
        extra=lambda folder: backend.emit(conv.snn, folder, **target_options), report=report)
    for note in conv.snn.meta.get("approximations", []):
        warn(note)
    click.echo(report)
    click.echo(f"wrote {len(written)} files to {out_dir}/: " + ", ".join(p.name for p in written))


def conversion_report(conv: Conversion, target: str, model: str, n_calib: int,
                      search: RecipeSearch | None = None, search_note: str = "") -> str:
    """A short Markdown report: layers with their λ, recipe (and the search that chose it),
    what was dropped."""
    snn = conv.snn
    lines = [f"# onnx2snn conversion of {Path(model).name} for target {target}", "",
             f"- calibration samples: {n_calib}",
             "- recipe: " + ", ".join(f"{k}={v}" for k, v in snn.meta["recipe"].items()),
             f"- ANN: {len(conv.ann)} nodes, {conv.ann.n_params():,} parameters, "
             f"{conv.ann.macs():,} MACs per sample"]
    for d in snn.meta.get("dropped", []):
        lines.append(f"- dropped: {d}")
    if snn.meta.get("output_note"):
        lines.append(f"- output: {snn.meta['output_note']}")
    for name, lay in snn.meta.get("input_layouts", {}).items():
        lines.append(f"- input {name}: {lay['layout']} {tuple(lay['shape'])} as exported (data in "
                     f"this layout); the network reads {tuple(lay['network_shape'])}")
    if search_note:
        lines.append(f"- recipe search: {search_note}")
    if search is not None:
        lines += ["", "## Recipe search (--recipe auto)", "", search.format()]
    lines += ["", "| population | neurons | λ (threshold) | source of λ | max activation |",
              "| --- | ---: | --- | --- | ---: |"]
    for n in snn.nodes:
        if n.kind != "if":
            continue
        st = conv.stats[n.name]
        assert st.lam is not None, "ann_to_snn makes no IF population without a λ"
        lam = np.atleast_1d(st.lam)
        lam_s = f"{float(lam[0]):.4g}" if lam.size == 1 else \
            f"{float(lam.min()):.4g} .. {float(lam.max()):.4g} ({lam.size} channels)"
        lines.append(f"| {n.name} | {int(np.prod(n.shape)):,} | {lam_s} | {st.source} | "
                     f"{st.maximum:.4g} |")
    return "\n".join(lines) + "\n"


__all__ = ["convert_cmd", "make_recipe", "recipe_options"]
