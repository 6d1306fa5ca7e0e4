"""Passes that tidy a freshly converted ANN graph without changing what it computes.

* ``fold_batchnorm`` — an ``Affine`` (BatchNorm, Mul/Add by constants) right after a Conv/Dense
  that feeds nothing else is folded into its weights: W' = W·s, b' = b·s + t (per output channel).
* ``merge_affines`` — two consecutive affine maps become one: s = s1·s2, t = t1·s2 + t2.
* ``fold_pad`` — a zero ``Pad`` feeding only a Conv or an average pool becomes their padding.
* ``drop_noop_views`` — a ``Reshape`` to the shape it already has is removed.
* ``prune_dead`` — nodes that no output depends on are removed.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from onnx2snn.ir.graph import Graph
from onnx2snn.ir.nodes import Affine, AvgPool, Conv, Dense, Node, Pad, Reshape


def _rebuild(graph: Graph, replace: dict[str, Node | None], rename: dict[str, str]) -> Graph:
    """Apply node replacements (None deletes) and redirect reads of renamed nodes."""
    def target(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    nodes = []
    for n in graph.nodes:
        if n.name in replace:
            new = replace[n.name]
            if new is None:
                continue
            n = new
        inputs = tuple(target(i) for i in n.inputs)
        nodes.append(n if inputs == n.inputs else n.replace(inputs=inputs))
    return graph.with_nodes(nodes, [target(o) for o in graph.outputs])


def _single_consumer(graph: Graph) -> dict[str, str]:
    """Map producer -> its only consumer, for producers read exactly once and not outputs."""
    out = {}
    for name, users in graph.consumers().items():
        if len(users) == 1 and name not in graph.outputs:
            out[name] = users[0]
    return out


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold per-channel affine maps (BatchNorm) into the Conv/Dense right before them."""
    only = _single_consumer(graph)
    replace: dict[str, Node | None] = {}
    rename: dict[str, str] = {}
    for n in graph.nodes:
        if not isinstance(n, Affine) or n.name in replace:
            continue
        src = graph[n.inputs[0]]
        if not isinstance(src, (Conv, Dense)) or only.get(src.name) != n.name:
            continue
        pc = n.per_channel()
        if pc is None:
            continue
        s, t = pc
        w = src.weight * s.reshape((-1,) + (1,) * (src.weight.ndim - 1))
        b = (np.zeros(len(s)) if src.bias is None else src.bias) * s + t
        replace[src.name] = src.replace(weight=w, bias=b, origin=src.origin + n.origin)
        replace[n.name] = None
        rename[n.name] = src.name
    return _rebuild(graph, replace, rename) if replace else graph


def merge_affines(graph: Graph) -> Graph:
    """Merge chains of affine maps into one."""
    only = _single_consumer(graph)
    merged: dict[str, Affine] = {}
    replace: dict[str, Node | None] = {}
    for n in graph.nodes:
        if not isinstance(n, Affine):
            continue
        src = merged.get(n.inputs[0], graph[n.inputs[0]])
        if isinstance(src, Affine) and only.get(src.name) == n.name:
            s1 = np.float64(1.0) if src.scale is None else src.scale
            t1 = np.float64(0.0) if src.shift is None else src.shift
            s2 = np.float64(1.0) if n.scale is None else n.scale
            t2 = np.float64(0.0) if n.shift is None else n.shift
            new = cast(Affine, n.replace(inputs=src.inputs, scale=s1 * s2, shift=t1 * s2 + t2,
                                         origin=src.origin + n.origin))
            merged[n.name] = new
            replace[n.name] = new
            replace[src.name] = None
    return _rebuild(graph, replace, {}) if replace else graph


def fold_pad(graph: Graph) -> Graph:
    """Fold zero Pad nodes into the padding of the Conv or average pool that alone reads them."""
    only = _single_consumer(graph)
    replace: dict[str, Node | None] = {}
    rename: dict[str, str] = {}
    for n in graph.nodes:
        if not isinstance(n, Pad) or n.name not in only:
            continue
        user = graph[only[n.name]]
        pads = tuple(a + b for a, b in zip(n.pads, getattr(user, "pads", (0, 0, 0, 0))))
        if isinstance(user, Conv):
            new = user.replace(pads=pads, origin=n.origin + user.origin)
        elif isinstance(user, AvgPool) and (user.count_include_pad or not any(user.pads)):
            new = user.replace(pads=pads, count_include_pad=True, origin=n.origin + user.origin)
        else:
            continue
        replace[user.name] = new
        replace[n.name] = None
        rename[n.name] = n.inputs[0]
    return _rebuild(graph, replace, rename) if replace else graph


def drop_noop_views(graph: Graph) -> Graph:
    """Remove Reshape nodes whose output shape equals their input shape."""
    replace: dict[str, Node | None] = {}
    rename: dict[str, str] = {}
    for n in graph.nodes:
        if isinstance(n, Reshape) and graph[n.inputs[0]].shape == n.shape:
            replace[n.name] = None
            rename[n.name] = n.inputs[0]
    return _rebuild(graph, replace, rename) if replace else graph


def prune_dead(graph: Graph) -> Graph:
    """Remove nodes no output depends on (inputs are always kept)."""
    live = set(graph.outputs)
    for n in reversed(graph.nodes):
        if n.name in live:
            live.update(n.inputs)
    keep = [n for n in graph.nodes if n.name in live or not n.inputs]
    return graph if len(keep) == len(graph.nodes) else graph.with_nodes(keep)


SIMPLIFY = (prune_dead, drop_noop_views, merge_affines, fold_batchnorm, fold_pad, prune_dead)
