"""``--maxpool avg``: max pooling replaced in the ANN by gain-corrected average pooling.

Max pooling has no synapse form on Loihi or in NIR, so those targets need average pooling. A net
trained with max pooling does not survive the plain swap: the average of a window of post-ReLU
activations is a fraction of its maximum, the biases downstream were trained for the maximum, and
the deeper layers fall silent (``digits_resnet``: 99.6 % → 10.6 % in onnxruntime, chance level).
The swap is therefore made in the ANN, before calibration, as

    y_c = g_c · avgpool(x)_c,      g_c = Σ maxpool(x)_c / Σ avgpool(x)_c

with the sums over the calibration data and over positions, ``x`` the pool's input in the original
ANN (g_c = 1 where channel c never fires or either sum is not positive). With the gain,
``digits_resnet`` keeps 99.1 % in onnxruntime. Calibration, bias correction and v0 calibration
then all see the network the SNN really approximates.

The gain is folded into weights where it can be, so that targets without a standalone scale
(Loihi, NIR) accept the result: into the input channels of the consumers when every consumer is
a Conv; otherwise, through the ReLU that feeds the pool (g_c > 0 commutes with ReLU), into the
output channels of the Conv/Dense before that ReLU. Where neither applies it stays an ``Affine``
node named ``<pool>/gain`` (the reference simulator runs it; Loihi and NIR refuse it by name).

Because the function changes, the substitute is measured against the original on the calibration
data (argmax agreement of the first output) and the figure is warned and kept in the graph's
``approximations``.
"""

from __future__ import annotations

import warnings

import numpy as np

from onnx2snn.ann_executor import run_ann
from onnx2snn.errors import PassError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Affine, AvgPool, Conv, Dense, MaxPool, Node, Relu


def average_pool_of(n: MaxPool) -> AvgPool:
    """The average pool with ``n``'s name and window geometry (padding cells not counted)."""
    if tuple(n.dilations) != (1, 1):
        raise PassError(f"MaxPool node {n.name!r}: dilated pooling cannot become average "
                        "pooling; use --maxpool gate")
    return AvgPool(name=n.name, inputs=n.inputs, shape=n.shape, origin=n.origin,
                   kernel=n.kernel, strides=n.strides, pads=n.pads, count_include_pad=False,
                   ceil_mode=n.ceil_mode)


def pool_gains(ann: Graph, calib: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per MaxPool node, g_c = Σ maxpool(x)_c / Σ avgpool(x)_c over ``calib`` (shape (C,))."""
    pools = [n for n in ann.nodes if isinstance(n, MaxPool)]
    sums = {n.name: np.zeros((2, n.shape[0])) for n in pools}
    for start in range(0, len(calib), batch_size):
        acts = run_ann(ann, calib[start:start + batch_size], keep=[n.inputs[0] for n in pools])
        for n in pools:
            x = acts[n.inputs[0]]
            sums[n.name][0] += n.forward(x).sum(axis=(0, 2, 3))
            sums[n.name][1] += average_pool_of(n).forward(x).sum(axis=(0, 2, 3))
    gains = {}
    for name, (s_max, s_avg) in sums.items():
        # 1 where a channel never fires, or where a signed input makes the ratio meaningless
        ok = (s_avg > 0) & (s_max > 0)
        gains[name] = np.where(ok, s_max / np.where(ok, s_avg, 1.0), 1.0)
    return gains


def scale_conv_inputs(conv: Conv, gain: np.ndarray) -> Node:
    """Multiply the weights reading input channel c by gain[c] (grouped convs included)."""
    o, cg = conv.weight.shape[:2]
    per_group = gain.reshape(conv.groups, cg)            # input channels of each group
    factor = per_group[np.arange(o) // (o // conv.groups)]  # (O, C/G): the channels o reads
    return conv.replace(weight=conv.weight * factor[:, :, None, None])


def _scale_outputs(node: Conv | Dense, gain: np.ndarray) -> Node:
    """Multiply output channel c of a Conv/Dense (weights and bias) by gain[c]."""
    w = node.weight * gain.reshape((-1,) + (1,) * (node.weight.ndim - 1))
    b = None if node.bias is None else node.bias * gain
    return node.replace(weight=w, bias=b)


def _fold_gain(graph: Graph, pool: AvgPool, gain: np.ndarray) -> dict[str, Node] | None:
    """Node replacements that fold ``gain`` into weights, or None where it cannot be."""
    consumers = graph.consumers()
    users = [graph[u] for u in consumers[pool.name]]
    if pool.name not in graph.outputs and users and all(isinstance(u, Conv) for u in users):
        return {u.name: scale_conv_inputs(u, gain) for u in users if isinstance(u, Conv)}
    relu = graph[pool.inputs[0]]
    if (isinstance(relu, Relu) and relu.ceiling is None and consumers[relu.name] == [pool.name]
            and relu.name not in graph.outputs):
        src = graph[relu.inputs[0]]
        if (isinstance(src, (Conv, Dense)) and consumers[src.name] == [relu.name]
                and src.name not in graph.outputs):
            return {src.name: _scale_outputs(src, gain)}
    return None


def substitute_average_pooling(ann: Graph, calib: np.ndarray, batch_size: int = 256) -> Graph:
    """Replace every MaxPool of ``ann`` by gain-corrected average pooling (see module doc).

    Returns the substituted ANN; warns with its agreement with ``ann`` on ``calib``.
    """
    if not any(isinstance(n, MaxPool) for n in ann.nodes):
        return ann
    gains = pool_gains(ann, calib, batch_size)
    graph = ann
    for name, gain in gains.items():
        pool = average_pool_of(graph[name])  # type: ignore[arg-type]
        graph = graph.with_nodes([pool if n.name == name else n for n in graph.nodes])
        replace = _fold_gain(graph, pool, gain)
        if replace is not None:
            graph = graph.with_nodes([replace.get(n.name, n) for n in graph.nodes])
            continue
        scale = Affine(name=f"{name}/gain", inputs=(name,), shape=pool.shape, origin=pool.origin,
                       scale=gain.reshape((-1, 1, 1)))
        nodes: list[Node] = []
        for n in graph.nodes:
            nodes.append(n if name not in n.inputs else
                         n.replace(inputs=tuple(scale.name if i == name else i for i in n.inputs)))
            if n.name == name:
                nodes.append(scale)
        graph = graph.with_nodes(nodes, [scale.name if o == name else o for o in graph.outputs])
    note = (f"MaxPool {', '.join(gains)} replaced by average pooling times a per-channel gain "
            f"(--maxpool avg): the network computes a different function; "
            f"{_agreement(ann, graph, calib, batch_size)}")
    warnings.warn(note, stacklevel=2)
    return graph.with_nodes(graph.nodes, approximations=[
        *ann.meta.get("approximations", []), note])


def _agreement(original: Graph, substitute: Graph, calib: np.ndarray, batch_size: int) -> str:
    """How far the substitute's first output is from the original's on ``calib``, in words."""
    out = original.outputs[0]
    a = np.concatenate([run_ann(original, calib[s:s + batch_size])[out]
                        for s in range(0, len(calib), batch_size)])
    b = np.concatenate([run_ann(substitute, calib[s:s + batch_size])[substitute.outputs[0]]
                        for s in range(0, len(calib), batch_size)])
    if a.ndim == 2 and a.shape[1] > 1:
        agree = float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
        return (f"on the {len(calib)} calibration inputs the substituted ANN picks the original's "
                f"class for {100 * agree:.1f} % (if that is low, train with average pooling)")
    rel = float(np.abs(a - b).mean() / max(float(np.abs(a).mean()), 1e-12))
    return (f"on the {len(calib)} calibration inputs the substituted ANN's output differs from "
            f"the original's by {100 * rel:.1f} % (mean absolute error / mean |output|)")
