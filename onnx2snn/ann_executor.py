"""Runs an ANN graph in NumPy: the frontend's proof of correctness and calibration's workhorse.

``run_ann`` evaluates the nodes in order on a batch and returns the outputs and any intermediate
activations asked for; intermediates nobody needs any more are freed as it goes, so memory stays
near the largest few activations rather than the sum of all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from onnx2snn.errors import DataError
from onnx2snn.ir.graph import Graph


def run_ann(graph: Graph, x: np.ndarray | dict[str, np.ndarray], *,
            keep: Iterable[str] = (), dtype: type = np.float64,
            visit: Callable[[str, np.ndarray], None] | None = None,
            kernels: Mapping[str, Callable[..., np.ndarray]] | None = None
            ) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` on the batch ``x`` (one array, or one per input name).

    Returns a dict with every output and every node named in ``keep``, each (B, *shape). With
    ``visit``, the nodes named in ``keep`` are instead handed to ``visit(name, value)`` as soon
    as they are computed and freed like any other intermediate (statistics that stream).
    ``kernels`` replaces the ``forward`` of the nodes it names (e.g. onnxruntime sessions).
    """
    feeds = x if isinstance(x, dict) else {graph.inputs[0]: x}
    visited = set(keep) if visit is not None else set()
    wanted = (set(keep) - visited) | set(graph.outputs)
    ops = kernels or {}
    remaining = {n.name: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            remaining[i] += 1
    values: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        if not n.inputs:
            if n.name not in feeds:
                raise DataError(f"no data given for input {n.name!r}")
            arr: np.ndarray = np.asarray(feeds[n.name], dtype=dtype)
            if arr.shape[1:] != n.shape:
                raise DataError(f"input {n.name!r} expects samples of shape {n.shape}, "
                                f"got {arr.shape[1:]}")
            values[n.name] = arr
        else:
            values[n.name] = ops.get(n.name, n.forward)(*(values[i] for i in n.inputs))
            if visit is not None and n.name in visited:
                visit(n.name, values[n.name])
            for i in n.inputs:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in wanted:
                    del values[i]
    return {k: values[k] for k in wanted}
