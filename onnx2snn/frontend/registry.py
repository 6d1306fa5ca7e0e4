"""The converter registry: one function per ONNX op type, each with the schema versions it handles.

A converter is registered with ``@converter("Conv", versions=(1, 22))``: it handles every ONNX
schema version of that op whose ``since_version`` lies in the inclusive range. A model at any opset
resolves each op to its schema version (``onnx.defs.get_schema(op, opset).since_version``), so a
model at opset 23 that uses Conv (schema 22) is accepted, and a future Conv-24 is refused by name
until someone reviews it (a test flags new schema versions the installed onnx knows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from onnx2snn.frontend.context import Context

ConverterFn = Callable[["Context", onnx.NodeProto], None]
# A static check run by the scan, before any conversion: (node, is_const(value name), names of
# the graph outputs) -> the reason the node cannot convert, or None. It lets the scan report a
# problem that sits downstream of another problem (where the converter never runs).
PrecheckFn = Callable[[onnx.NodeProto, Callable[[str], bool], "set[str]"], "str | None"]


class Unsupported(Exception):
    """Raised by a converter when this particular node cannot be converted; says why and what to do.

    ``cause`` = (op type, node name) when another ONNX node than the one being converted is the
    reason (a Transpose whose permutation reaches a Conv): the refusal then names that node.
    """

    def __init__(self, message: str, cause: tuple[str, str] | None = None):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class Converter:
    """A registered converter: the op type, inclusive schema version range and the function."""

    op_type: str
    versions: tuple[int, int]
    fn: ConverterFn
    summary: str
    precheck: PrecheckFn | None = None


CONVERTERS: dict[str, Converter] = {}

# Ops that are refused on purpose, with the reason and the way out. Listed so docs and errors can
# say more than "no converter".
REFUSED: dict[str, str] = {
    "Sigmoid": "sigmoid is not spiking-expressible (no rate code for a saturating non-monotone "
               "map); retrain with ReLU",
    "Tanh": "tanh is not spiking-expressible (negative outputs); retrain with ReLU",
    "HardSigmoid": "hard sigmoid is not spiking-expressible as such; use Clip(0, λ) (ReLU6-style)",
    "Elu": "ELU needs negative spikes; retrain with ReLU",
    "Selu": "SELU needs negative spikes; retrain with ReLU",
    "Gelu": "GELU is not spiking-expressible; retrain with ReLU",
    "Softplus": "softplus is not spiking-expressible; retrain with ReLU",
    "LRN": "local response normalization is not spiking-expressible; re-export without it, or "
           "pass drop_ops=['LRN'] (--drop LRN) to remove it and accept an accuracy change",
    "LSTM": "recurrent layers are not supported; only feed-forward networks convert",
    "GRU": "recurrent layers are not supported; only feed-forward networks convert",
    "RNN": "recurrent layers are not supported; only feed-forward networks convert",
    "Loop": "control flow is not supported; export a feed-forward graph",
    "If": "control flow is not supported; export a feed-forward graph",
    "Scan": "control flow is not supported; export a feed-forward graph",
    "InstanceNormalization": "instance normalization depends on the input statistics; "
                             "use BatchNormalization",
    "LayerNormalization": "layer normalization depends on the input statistics; "
                          "use BatchNormalization",
    "Exp": "exp is not spiking-expressible",
    "Log": "log is not spiking-expressible",
    "Sqrt": "sqrt is not spiking-expressible",
}


def converter(op_type: str, versions: tuple[int, int], precheck: PrecheckFn | None = None
              ) -> Callable[[ConverterFn], ConverterFn]:
    """Register ``fn`` as the converter of ``op_type`` for schema versions in ``versions``.

    ``precheck`` (optional) refuses nodes the scan can already judge without shapes; the
    converter should raise ``Unsupported`` with the same reason for the same nodes.
    """

    def register(fn: ConverterFn) -> ConverterFn:
        if op_type in CONVERTERS:
            raise TypeError(f"two converters claim {op_type}")
        doc = (fn.__doc__ or "").strip().splitlines()
        CONVERTERS[op_type] = Converter(op_type, versions, fn, doc[0] if doc else "", precheck)
        return fn

    return register


def schema_version(op_type: str, opset: int) -> int | None:
    """The ``since_version`` of ``op_type`` at ``opset`` in the default domain, None if unknown."""
    try:
        return int(onnx.defs.get_schema(op_type, opset, "").since_version)
    except onnx.defs.SchemaError:
        return None


def why_unsupported(op_type: str, domain: str, opset: int) -> str | None:
    """None if a converter handles this op at this opset, else the reason (with a hint)."""
    if domain not in ("", "ai.onnx"):
        return f"custom domain {domain!r} is not supported; export with standard ONNX ops"
    conv = CONVERTERS.get(op_type)
    if conv is None:
        return REFUSED.get(op_type, "no converter for this op")
    version = schema_version(op_type, opset)
    if version is None:
        return f"ONNX defines no {op_type} at opset {opset}"
    lo, hi = conv.versions
    if not lo <= version <= hi:
        return (f"{op_type} schema version {version} (opset {opset}) is outside the versions "
                f"onnx2snn handles ({lo}..{hi}); export with an opset between 9 and 23")
    return None


def load_all() -> dict[str, Converter]:
    """Import every converter module (they register on import) and return the registry."""
    from onnx2snn.frontend import ops  # noqa: F401  (imports register the converters)

    return CONVERTERS
