"""Pre-flight: refuse a network a target cannot express before calibration, not after it.

A target's ``check`` reads an SNN graph, and the SNN graph exists only after calibration and the
recipe search (seconds on MNIST, minutes on a ResNet-50). What the checks refuse is nearly
always structure: node kinds (max pooling, a standalone Pad or scale), padding, pooling that
cannot be folded, concatenations, neurons that start at v0 ≠ 0. That follows from the ANN and
the recipe's structural options (``maxpool``, ``v0``, ``norm``, ``reset``), not from the
calibrated values. So ``outline_snns`` builds the SNN graph each recipe makes from the first
``PREFLIGHT_SAMPLES`` calibration samples, without the corrections (bias, gain, v0 calibration:
they change values only), and ``expressible_recipes`` runs the target's own ``check`` on it:
the same rules and the same messages as the check after calibration (no copy of the rules).

Problems that depend on the calibrated values (a corrected bias a NIR convolution cannot carry,
a register range on Loihi) are still found after calibration; the callers keep that check.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from onnx2snn.backends import cannot_express
from onnx2snn.convert.calibrate import LayerStats, collect_stats
from onnx2snn.convert.pipeline import build_snn, prepare_ann
from onnx2snn.convert.recipe import Recipe
from onnx2snn.ir.graph import Graph

PREFLIGHT_SAMPLES = 1  # calibration samples the outline is built from: λ only needs a value


def outline_snns(ann: Graph, calib: np.ndarray, recipes: Mapping[str, Recipe],
                 batch_size: int = 256) -> dict[str, Graph]:
    """{label: the SNN graph ``recipes[label]`` makes of ``ann``}, calibrated on the first
    ``PREFLIGHT_SAMPLES`` of ``calib`` and without corrections: the structure the full
    conversion will have, in a fraction of a second. Errors of the conversion itself (a dilated
    max pool under ``--maxpool avg``, ``--maxpool error``) are raised as the conversion raises
    them; its warnings are left to the full conversion."""
    x = calib[:PREFLIGHT_SAMPLES]
    prepared: dict[str, tuple[Graph, dict[str, LayerStats]]] = {}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once, by the conversion that follows
        for label, recipe in recipes.items():
            if recipe.maxpool not in prepared:  # the only option prepare_ann reads
                graph = prepare_ann(ann, x, recipe, batch_size)
                prepared[recipe.maxpool] = graph, collect_stats(graph, x, batch_size=batch_size)
            graph, stats = prepared[recipe.maxpool]
            out[label] = build_snn(graph, stats, recipe, x, corrections=False).snn
    return out


def expressible_recipes(ann: Graph, calib: np.ndarray, recipes: Mapping[str, Recipe],
                        target: str, check: Callable[[Graph], list[str]],
                        batch_size: int = 256) -> tuple[dict[str, Recipe], dict[str, list[str]]]:
    """The ``recipes`` whose SNN graph (``outline_snns``) the ``target``'s ``check`` accepts,
    and {label: problems} of the others; ``BackendError`` (``cannot_express``: exit code 4,
    every problem of every recipe, each once) when it accepts none."""
    problems = {label: check(snn)
                for label, snn in outline_snns(ann, calib, recipes, batch_size).items()}
    ok = {label: recipes[label] for label, found in problems.items() if not found}
    if not ok:
        raise cannot_express(target, list(dict.fromkeys(p for found in problems.values()
                                                         for p in found)))
    return ok, {label: found for label, found in problems.items() if found}


__all__ = ["PREFLIGHT_SAMPLES", "expressible_recipes", "outline_snns"]
