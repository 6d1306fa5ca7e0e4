"""What ``onnx2snn inspect`` reports: the ANN graph of an ONNX model, node by node, and what fails.

``inspect_model`` loads and converts a model and returns an ``InspectReport``: one row per node of
the ANN graph (name, kind, output shape, parameters, MACs, a short description of its settings and
the ONNX nodes it came from), totals, the terminal Softmax that was dropped, warnings, and, when
the model cannot be converted, the part that did convert plus every unsupported node (sorted, with
node names and hints). Bad files raise ``InputFileError`` as everywhere else. The CLI only formats
the report (``to_dict`` is the ``--json`` form).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from onnx2snn.errors import UnsupportedModelError
from onnx2snn.frontend.build import convert_model
from onnx2snn.frontend.load import load_model
from onnx2snn.ir.nodes import (
    AvgPool,
    ChannelPermute,
    Concat,
    Conv,
    Dense,
    LeakyRelu,
    MaxPool,
    Node,
    Pad,
    Relu,
)

JSON_FORMAT = "onnx2snn-inspect"
JSON_VERSION = 1


@dataclass(frozen=True)
class NodeRow:
    """One node of the ANN graph as the report shows it."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    params: int
    macs: int
    detail: str
    origin: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One ONNX node that cannot be converted: its op type, (generated) name and the reason."""

    op: str
    node: str
    reason: str


@dataclass(frozen=True)
class InspectReport:
    """Everything ``onnx2snn inspect`` prints about one model."""

    source: str
    sha256: str
    opset: int
    ir_version: int
    producer: str
    onnx_ops: dict[str, int]
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]
    nodes: tuple[NodeRow, ...]
    dropped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    drop_ops: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    simplified: bool = True

    @property
    def converts(self) -> bool:
        """True if the whole model converts."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 if the model converts, else the exit code of ``UnsupportedModelError``."""
        return 0 if self.converts else UnsupportedModelError.exit_code

    @property
    def n_params(self) -> int:
        return sum(r.params for r in self.nodes)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.nodes)

    def problem_groups(self) -> list[tuple[str, str, list[str]]]:
        """Problems grouped as (op, reason, node names), sorted by op then reason."""
        groups: dict[tuple[str, str], list[str]] = {}
        for p in self.problems:
            groups.setdefault((p.op, p.reason), []).append(p.node)
        return [(op, reason, sorted(names)) for (op, reason), names in sorted(groups.items())]

    def to_dict(self) -> dict[str, Any]:
        """The report as one JSON-friendly dict (the ``--json`` output)."""
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "model": {"source": self.source, "sha256": self.sha256, "opset": self.opset,
                      "ir_version": self.ir_version, "producer": self.producer,
                      "onnx_ops": dict(self.onnx_ops)},
            "converts": self.converts,
            "exit_code": self.exit_code,
            "graph": {"complete": self.converts, "simplified": self.simplified,
                      "inputs": {k: list(v) for k, v in self.inputs.items()},
                      "outputs": list(self.outputs),
                      "nodes": [_row_dict(r) for r in self.nodes]},
            "summary": {"nodes": len(self.nodes), "params": self.n_params, "macs": self.macs,
                        "dropped": list(self.dropped), "opset": self.opset,
                        "drop_ops": list(self.drop_ops), "warnings": list(self.warnings),
                        "by_kind": dict(sorted(Counter(r.kind for r in self.nodes).items()))},
            "unsupported": [asdict(p) for p in self.problems],
        }


def _row_dict(row: NodeRow) -> dict[str, Any]:
    d = asdict(row)
    d["inputs"], d["shape"], d["origin"] = list(row.inputs), list(row.shape), list(row.origin)
    return d


def _dims(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def describe(node: Node) -> str:
    """A short, human-readable summary of a node's settings (kernel, strides, pads, ...)."""
    parts: list[str] = []
    if isinstance(node, (Conv, AvgPool, MaxPool)):
        kernel = node.weight.shape[2:] if isinstance(node, Conv) else node.kernel
        parts.append(f"k{_dims(kernel)}")
        if tuple(node.strides) != (1, 1):
            parts.append(f"s{_dims(node.strides)}")
        if any(node.pads):
            parts.append("p" + ",".join(str(p) for p in node.pads))
        if isinstance(node, (Conv, MaxPool)) and tuple(node.dilations) != (1, 1):
            parts.append(f"d{_dims(node.dilations)}")
        if isinstance(node, Conv) and node.groups != 1:
            cin = node.weight.shape[1] * node.groups
            parts.append("depthwise" if node.groups == cin else f"groups={node.groups}")
        if isinstance(node, (AvgPool, MaxPool)) and node.ceil_mode:
            parts.append("ceil")
        if isinstance(node, AvgPool) and node.count_include_pad and any(node.pads):
            parts.append("count_include_pad")
        if isinstance(node, Conv) and node.bias is None:
            parts.append("no bias")
    elif isinstance(node, Dense):
        parts.append(f"{node.weight.shape[1]}->{node.weight.shape[0]}")
        if node.bias is None:
            parts.append("no bias")
    elif isinstance(node, Relu) and node.ceiling is not None:
        parts.append(f"ceiling={node.ceiling:g}")
    elif isinstance(node, LeakyRelu):
        alpha = node.channel_alpha()
        parts.append(f"alpha={alpha[0]:g}" if np.all(alpha == alpha[0]) else
                     f"alpha {alpha.min():g}..{alpha.max():g} per channel")
        parts.append("(2 populations)")
    elif isinstance(node, Pad):
        parts.append("p" + ",".join(str(p) for p in node.pads))
    elif isinstance(node, Concat):
        parts.append(f"axis={node.axis}")
    elif isinstance(node, ChannelPermute):
        parts.append(f"{node.perm.size} channels")
    else:
        for key, arr in node.arrays().items():
            if arr.size == 1:
                parts.append(f"{key}={float(np.ravel(arr)[0]):g}")
            else:
                parts.append(f"{key} {_dims(arr.shape)}")
    return " ".join(parts)


def _rows(nodes: Sequence[Node]) -> tuple[NodeRow, ...]:
    shapes = {n.name: n.shape for n in nodes}
    rows = []
    for n in nodes:
        in_shapes = [shapes[i] for i in n.inputs if i in shapes]
        macs = n.macs(in_shapes) if len(in_shapes) == len(n.inputs) else 0
        rows.append(NodeRow(n.name, n.kind, tuple(n.inputs), tuple(n.shape), n.n_params(),
                            int(macs), describe(n), tuple(n.origin)))
    return tuple(rows)


def inspect_model(model: str | os.PathLike[str] | bytes | onnx.ModelProto,
                  drop_ops: Iterable[str] = (), output: str | None = None) -> InspectReport:
    """Load and convert ``model`` and report on it; never raises for unsupported ops.

    Raises ``InputFileError`` for files that cannot be read as a valid ONNX model.
    """
    loaded = load_model(model)
    drop = tuple(sorted(set(drop_ops)))
    g = loaded.model.graph
    inits = {t.name for t in g.initializer}
    inputs = {}
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        inputs[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
    base = InspectReport(
        source=loaded.source, sha256=loaded.sha256, opset=loaded.opset,
        ir_version=int(loaded.model.ir_version),
        producer=f"{loaded.model.producer_name} {loaded.model.producer_version}".strip(),
        onnx_ops=dict(sorted(Counter(n.op_type for n in g.node).items())),
        inputs=inputs, outputs=(), nodes=(), drop_ops=drop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            graph = convert_model(loaded, drop, output)
        except UnsupportedModelError as e:
            partial = e.partial_graph if isinstance(e.partial_graph, list) else []
            return dataclasses.replace(
                base, nodes=_rows(partial), simplified=False,
                warnings=tuple(str(w.message) for w in caught),
                problems=tuple(Problem(*p) for p in e.problems))
    return dataclasses.replace(
        base, outputs=tuple(graph.outputs), nodes=_rows(graph.nodes),
        dropped=tuple(graph.meta.get("dropped", ())),
        warnings=tuple(str(w.message) for w in caught))


__all__ = ["InspectReport", "NodeRow", "Problem", "describe", "inspect_model"]
