"""``onnx2snn convert MODEL.onnx --target T --calib DATA -o OUT/``: calibrate, convert, emit.

The library does the work (``onnx2snn.convert``, the target's backend, ``onnx2snn.artifacts``);
this module only maps options to a ``Recipe`` and reports what was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from onnx2snn.artifacts import write_output_folder
from onnx2snn.backends import REGISTRY, get_backend
from onnx2snn.cli.common import (
    drop_option,
    model_argument,
    nir_for_option,
    output_option,
    verbose_option,
    warn,
    warn_dropped,
)
from onnx2snn.convert import Conversion, Recipe, convert_ann
from onnx2snn.convert.recipe import MAXPOOLS, NORMS, RESETS, V0S
from onnx2snn.data import load_dataset
from onnx2snn.errors import BackendError
from onnx2snn.frontend import convert_model, load_model
from onnx2snn.oracle import chosen_output, reference_note


def recipe_options(f: Any) -> Any:
    """The conversion recipe's options (shared by convert and compare)."""
    options = [
        click.option("--norm", type=click.Choice(NORMS), default="percentile", show_default=True,
                     help="How each layer's scale λ comes from calibration activations: max, "
                          "p-th percentile of the layer, or one percentile per channel."),
        click.option("--percentile", type=float, default=99.9, show_default=True,
                     help="p for --norm percentile / channel-percentile (99.99 for deep nets)."),
        click.option("--reset", type=click.Choice(RESETS), default="subtract", show_default=True,
                     help="Reset after a spike: subtract the threshold (keeps the residue) or "
                          "set the potential to zero."),
        click.option("--v0", type=click.Choice(V0S), default="zero", show_default=True,
                     help="Initial membrane potential: zero, half the threshold (faster "
                          "convergence at small T), or calibrated per neuron on the calibration "
                          "data (Li et al. 2021)."),
        click.option("--maxpool", type=click.Choice(MAXPOOLS), default="gate", show_default=True,
                     help="Max pooling: gate (pass the most active input's spikes), avg "
                          "(replace by average pooling; changes the function) or error."),
        click.option("--ceiling/--no-ceiling", default=True, show_default=True,
                     help="Use the ceiling of Clip(0, λ) / ReLU6 layers as their scale λ."),
        click.option("--bias-correction/--no-bias-correction", default=False, show_default=True,
                     help="Correct each layer's bias from ANN-vs-SNN mean activations on the "
                          "calibration data (Li et al. 2021)."),
        click.option("--correction-steps", type=click.IntRange(1), default=32,
                     show_default=True, help="Time steps simulated for --bias-correction."),
        click.option("--calib-samples", type=click.IntRange(1), default=512, show_default=True,
                     help="Use at most this many calibration samples."),
        click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
                     help="Samples per batch during calibration."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def make_recipe(norm: str, percentile: float, reset: str, v0: str, maxpool: str, ceiling: bool,
                bias_correction: bool, correction_steps: int) -> Recipe:
    """A Recipe from the CLI's option values."""
    return Recipe(norm=norm, percentile=percentile, reset=reset, v0=v0, maxpool=maxpool,
                  use_ceiling=ceiling, bias_correction=bias_correction,
                  correction_steps=correction_steps)


@click.command()
@model_argument
@click.option("--target", "-t", type=click.Choice(list(REGISTRY)), default="numpy",
              show_default=True, help="Backend whose artifact to write.")
@click.option("--calib", "calib_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration data: .npz with x (N, *input shape) [and y], or .npy of x.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (created; an earlier onnx2snn output there is replaced).")
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
def convert_cmd(model: str, target: str, calib_path: str, out_dir: str, norm: str,
                percentile: float, reset: str, v0: str, maxpool: str, ceiling: bool,
                bias_correction: bool, correction_steps: int, calib_samples: int,
                batch_size: int, drop_ops: tuple[str, ...], output: str | None, neuron: str,
                nir_reset: str, nir_pool: str, nir_for: str, quiet: bool) -> None:
    """Calibrate MODEL.onnx on data and convert it to a spiking network for a target.

    Writes OUT/network.snn (the SNN graph: re-emits to any target without recalibrating),
    OUT/source.onnx (the ANN, used by evaluate), OUT/report.md, OUT/onnx2snn.json and the
    target's own files.

    Example: onnx2snn convert models/digits_cnn.onnx --calib models/digits_calib.npz -o out/
    """
    warn_dropped(drop_ops)
    recipe = make_recipe(norm, percentile, reset, v0, maxpool, ceiling, bias_correction,
                         correction_steps)
    backend = get_backend(target)
    loaded = load_model(model)
    ann = convert_model(loaded, drop_ops, output)
    # said now, not first in evaluate: which ANN reference evaluate and compare will use
    oracle_note = reference_note(model, chosen_output(ann.meta))
    if oracle_note:
        warn(oracle_note)
    calib = load_dataset(calib_path, ann[ann.inputs[0]].shape, limit=calib_samples)
    conv = convert_ann(ann, calib.x, recipe, batch_size=batch_size, show_progress=not quiet)
    target_options: dict[str, Any] = (
        {"neuron": neuron, "calib_x": calib.x} if target == "loihi" else
        {"nir_reset": nir_reset, "nir_pool": nir_pool, "nir_for": nir_for} if target == "nir"
        else {})
    problems = backend.check(conv.snn, **target_options)
    if problems:
        raise BackendError(f"the {target} target cannot express this network:\n  "
                           + "\n  ".join(problems))
    report = conversion_report(conv, target, model, len(calib))
    written = write_output_folder(
        out_dir, conv.snn, model,
        {"target": target, "recipe": recipe.to_dict(), "source_sha256": loaded.sha256,
         "calibration_samples": len(calib), "source_name": Path(model).name,
         "output": chosen_output(ann.meta), "ann_reference": "onnx2snn executor" if oracle_note
         else "onnxruntime"},
        extra=lambda folder: backend.emit(conv.snn, folder, **target_options), report=report)
    for note in conv.snn.meta.get("approximations", []):
        warn(note)
    click.echo(report)
    click.echo(f"wrote {len(written)} files to {out_dir}/: " + ", ".join(p.name for p in written))


def conversion_report(conv: Conversion, target: str, model: str, n_calib: int) -> str:
    """A short Markdown report: layers with their λ, recipe, what was dropped."""
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
