"""The conversion pipeline: ONNX model + calibration data + recipe -> calibrated SNN graph."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from onnx2snn.convert.bias_correction import calibrate_gains, calibrate_v0, correct_biases
from onnx2snn.convert.calibrate import LayerStats, choose_scales, collect_stats
from onnx2snn.convert.maxpool_avg import substitute_average_pooling
from onnx2snn.convert.recipe import Recipe
from onnx2snn.convert.signed import split_signed_activations
from onnx2snn.convert.to_snn import ann_to_snn, commute_maxpool_relu
from onnx2snn.errors import DataError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir.graph import Graph
from onnx2snn.passes import run_passes
from onnx2snn.progress import progress_bar


@dataclass(frozen=True)
class Conversion:
    """The ANN graph, the SNN graph made from it, and the calibration statistics used."""

    ann: Graph
    snn: Graph
    stats: dict[str, LayerStats]


def convert_ann(ann: Graph, calib: np.ndarray, recipe: Recipe | None = None, *,
                batch_size: int = 256, show_progress: bool = False) -> Conversion:
    """Calibrate ``ann`` on ``calib`` (N, *input shape) and build the SNN graph."""
    recipe = recipe or Recipe()
    ann = prepare_ann(ann, calib, recipe, batch_size)
    with progress_bar(len(calib), "calibrating", show_progress) as update:
        stats = collect_stats(ann, calib, batch_size=batch_size, progress=update)
    return build_snn(ann, stats, recipe, calib, show_progress=show_progress)


def prepare_ann(ann: Graph, calib: np.ndarray, recipe: Recipe, batch_size: int = 256) -> Graph:
    """The ANN the SNN will approximate: MaxPool swapped after its ReLU, for ``--maxpool avg``
    gain-corrected average pooling substituted (calibrate the network the SNN approximates),
    then every LeakyRelu/PRelu split into two ReLU layers (``split_signed_activations``)."""
    if not np.all(np.isfinite(calib)):
        # NaN activations would make every λ NaN, then silently the fallback 1.0
        raise DataError("the calibration data holds NaN or infinite values")
    ann = run_passes(ann, [commute_maxpool_relu])
    if recipe.maxpool == "avg":
        ann = substitute_average_pooling(ann, calib, batch_size)
    return split_signed_activations(ann, recipe.maxpool)


def build_snn(ann: Graph, stats: dict[str, LayerStats], recipe: Recipe, calib: np.ndarray, *,
              show_progress: bool = False, corrections: bool = True) -> Conversion:
    """The SNN of ``ann`` (after ``commute_maxpool_relu``) from collected activation ``stats``:
    λ by the recipe, threshold balancing, then the recipe's corrections on ``calib``.

    ``stats`` is not modified, so one collection serves several recipes (``--recipe auto``).
    ``corrections=False`` leaves the corrections out (they change values, not the graph's
    structure: the pre-flight check, ``onnx2snn.convert.preflight``).
    """
    stats = choose_scales(ann, {k: copy.copy(v) for k, v in stats.items()}, recipe)
    snn = ann_to_snn(ann, stats, recipe)
    if not corrections:
        return Conversion(ann, snn, stats)
    layers = sum(1 for n in snn.nodes if n.kind == "if")
    if recipe.gain_calibration:
        with progress_bar(layers, "gain calibration", show_progress, unit="layer") as update:
            snn = calibrate_gains(snn, ann, calib, recipe.correction_steps, progress=update)
    if recipe.bias_correction:
        with progress_bar(layers, "bias correction", show_progress, unit="layer") as update:
            snn = correct_biases(snn, ann, calib, recipe.correction_steps, progress=update)
    if recipe.v0 == "calibrated":
        with progress_bar(layers, "v0 calibration", show_progress, unit="layer") as update:
            snn = calibrate_v0(snn, ann, calib, recipe.correction_steps, progress=update)
    return Conversion(ann, snn, stats)


def convert(model: str | os.PathLike[str] | bytes | onnx.ModelProto, calib: np.ndarray,
            recipe: Recipe | None = None, *, drop_ops: Iterable[str] = (),
            output: str | None = None, batch_size: int = 256,
            show_progress: bool = False) -> Conversion:
    """Load an ONNX model, convert it to an ANN graph, calibrate and build the SNN graph."""
    return convert_ann(onnx_to_ann(model, drop_ops, output), calib, recipe, batch_size=batch_size,
                       show_progress=show_progress)
