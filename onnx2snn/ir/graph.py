"""The graph of the intermediate representation: an ordered DAG of IR nodes plus metadata.

A ``Graph`` holds its nodes in topological order (every input is produced by an earlier node),
names its outputs, and carries a JSON-friendly ``meta`` dict (source model hash, dropped softmax,
recipe, scales ...). Construction validates the whole graph and raises ``IRError`` on any
inconsistency; graphs are immutable, passes build new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from onnx2snn.errors import IRError
from onnx2snn.ir.nodes import Input, Node, Shape


@dataclass(frozen=True, eq=False)
class Graph:
    """An immutable, validated DAG of IR nodes in topological order."""

    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        index = {}
        for n in self.nodes:
            if n.name in index:
                raise IRError(f"two nodes are named {n.name!r}")
            index[n.name] = n
        object.__setattr__(self, "_index", index)
        self.validate()

    # -- access ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Node:
        try:
            return self._index[name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the graph") from None

    def __contains__(self, name: object) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the ``Input`` nodes, in order."""
        return tuple(n.name for n in self.nodes if isinstance(n, Input))

    def input_shapes(self, node: Node) -> list[Shape]:
        """Shapes of the producers of ``node``'s inputs."""
        return [self[i].shape for i in node.inputs]

    def consumers(self) -> dict[str, list[str]]:
        """For each node name, the names of the nodes that read it (in graph order)."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def macs(self) -> int:
        """Total multiply-accumulates per sample."""
        return sum(n.macs(self.input_shapes(n)) for n in self.nodes)

    def n_params(self) -> int:
        """Total number of stored parameters."""
        return sum(n.n_params() for n in self.nodes)

    def with_nodes(self, nodes: Iterable[Node], outputs: Iterable[str] | None = None,
                   **meta: Any) -> Graph:
        """A new graph with other nodes (and outputs), metadata updated by ``meta``."""
        merged = dict(self.meta)
        merged.update(meta)
        return Graph(tuple(nodes), tuple(self.outputs if outputs is None else outputs), merged)

    # -- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``IRError`` unless every input exists earlier and every shape is consistent."""
        seen: dict[str, Node] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i not in seen:
                    raise IRError(f"node {n.name!r} reads {i!r}, which is not produced before it")
            expected = n.infer_shape([seen[i].shape for i in n.inputs])
            if tuple(expected) != n.shape:
                raise n.fail(f"declares shape {n.shape} but its inputs give {tuple(expected)}")
            seen[n.name] = n
        if not self.outputs:
            raise IRError("the graph has no outputs")
        for o in self.outputs:
            if o not in seen:
                raise IRError(f"output {o!r} is not a node of the graph")
        if not self.inputs:
            raise IRError("the graph has no input node")
