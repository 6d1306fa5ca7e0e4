"""ANN graph + layer scales -> SNN graph (threshold balancing, DESIGN.md §3-4).

Every ``Relu`` becomes an ``IF`` population with θ = λ and out_scale = λ (so synapse weights and
biases stay exactly the ANN's: a spike is worth λ in ANN units, and currents from branches with
different scales add up correctly — residual Add and Concat need nothing special). ``v0`` is 0 or
θ/2. MaxPool follows the recipe's policy. Every graph output gets a ``Readout`` accumulator.
Before that, a MaxPool that directly follows a linear node and feeds a ReLU is swapped with it
(max and ReLU commute), so the pool sees spikes.
"""

from __future__ import annotations

import warnings

import numpy as np

from onnx2snn.convert.calibrate import LayerStats
from onnx2snn.convert.recipe import Recipe
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import AvgPool, LeakyRelu, MaxPool, Node, Relu
from onnx2snn.ir.spiking import IF, MaxPoolGate, Readout


def commute_maxpool_relu(graph: Graph) -> Graph:
    """Rewrite x -> MaxPool -> Relu as x -> Relu -> MaxPool (equal: both are monotone; the same for
    a LeakyRelu with α ≥ 0).

    The ReLU keeps its name (calibration keys on it); whoever read the ReLU now reads the pool.
    """
    consumers = graph.consumers()
    for n in graph.nodes:
        users = consumers[n.name]
        if (not isinstance(n, MaxPool) or isinstance(graph[n.inputs[0]], (Relu, LeakyRelu))
                or len(users) != 1 or n.name in graph.outputs
                or not _monotone_rectifier(graph[users[0]])):
            continue
        relu = graph[users[0]]
        nodes: list[Node] = []
        for m in graph.nodes:
            if m is n:
                nodes.append(relu.replace(inputs=n.inputs, shape=graph[n.inputs[0]].shape))
                nodes.append(n.replace(inputs=(relu.name,)))
            elif m is not relu:
                nodes.append(m.replace(inputs=tuple(n.name if k == relu.name else k
                                                    for k in m.inputs)))
        outputs = [n.name if o == relu.name else o for o in graph.outputs]
        return commute_maxpool_relu(graph.with_nodes(nodes, outputs))
    return graph


def _monotone_rectifier(n: Node) -> bool:
    """A ReLU, or a leaky ReLU with every α ≥ 0 (non-decreasing, so it commutes with max)."""
    return isinstance(n, Relu) or (isinstance(n, LeakyRelu) and bool(np.all(n.alpha >= 0)))


def ann_to_snn(ann: Graph, stats: dict[str, LayerStats], recipe: Recipe) -> Graph:
    """Build the SNN graph: IF populations, max-pool policy, readouts; stats must hold λ."""
    nodes: list[Node] = []
    notes: list[str] = []
    for n in ann.nodes:
        if isinstance(n, LeakyRelu):
            raise PassError(f"LeakyRelu node {n.name!r} reached the SNN builder; run "
                            "split_signed_activations (prepare_ann) first")
        if isinstance(n, Relu):
            lam = stats[n.name].lam
            if lam is None:
                raise PassError(f"layer {n.name!r} has no scale λ; calibrate first")
            lam = np.asarray(lam, dtype=np.float64)
            if lam.ndim == 1:
                lam = lam.reshape((-1,) + (1,) * (len(n.shape) - 1))
            v0 = np.zeros_like(lam) if recipe.v0 == "zero" else lam / 2
            nodes.append(IF(name=n.name, inputs=n.inputs, shape=n.shape, origin=n.origin,
                            threshold=lam, out_scale=lam, v0=v0, reset=recipe.reset))
        elif isinstance(n, MaxPool):
            nodes.append(_maxpool(n, recipe, notes))
        else:
            nodes.append(n)
    outputs = []
    for o in ann.outputs:
        name = f"{o}/readout"
        src = next(m for m in nodes if m.name == o)
        nodes.append(Readout(name=name, inputs=(o,), shape=src.shape, origin=src.origin))
        outputs.append(name)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    meta = dict(ann.meta)
    meta.update({
        "stage": "snn",
        "recipe": recipe.to_dict(),
        "calibration": {k: v.summary() for k, v in stats.items()},
        "approximations": list(ann.meta.get("approximations", [])) + notes,
    })
    return Graph(tuple(nodes), tuple(outputs), meta)


def _maxpool(n: MaxPool, recipe: Recipe, notes: list[str]) -> Node:
    if recipe.maxpool == "error":
        raise PassError(f"MaxPool node {n.name!r} (ONNX {', '.join(n.origin)}): max pooling has "
                        "no exact spiking form; use --maxpool gate or --maxpool avg")
    if recipe.maxpool == "gate":
        return MaxPoolGate(name=n.name, inputs=n.inputs, shape=n.shape, origin=n.origin,
                           kernel=n.kernel, strides=n.strides, pads=n.pads,
                           dilations=n.dilations, ceil_mode=n.ceil_mode)
    if tuple(n.dilations) != (1, 1):
        raise PassError(f"MaxPool node {n.name!r}: dilated pooling cannot become average "
                        "pooling; use --maxpool gate")
    notes.append(f"MaxPool {n.name} replaced by average pooling (--maxpool avg): the network "
                 "computes a different function; check the ANN-vs-SNN accuracy")
    return AvgPool(name=n.name, inputs=n.inputs, shape=n.shape, origin=n.origin,
                   kernel=n.kernel, strides=n.strides, pads=n.pads, count_include_pad=False,
                   ceil_mode=n.ceil_mode)
