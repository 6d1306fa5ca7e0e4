"""The converter registry against the installed onnx's operator schemas.

When a new onnx release adds a schema version of an op (say Conv-24), the converter must be
reviewed before models using it are accepted: ``test_newest_schema_within_range`` fails and names
the op, the new version and the converter's range.
"""

from __future__ import annotations

import onnx
import pytest

from onnx2snn.frontend.registry import CONVERTERS, REFUSED, load_all, why_unsupported

MIN_OPSET = 9


def _schema_versions() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            out.setdefault(s.name, []).append(int(s.since_version))
    return {k: sorted(v) for k, v in out.items()}


SCHEMAS = _schema_versions()
REGISTRY = load_all()


def test_registry_is_not_empty() -> None:
    assert len(REGISTRY) >= 25


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_newest_schema_within_range(op: str) -> None:
    lo, hi = REGISTRY[op].versions
    assert op in SCHEMAS, f"onnx {onnx.__version__} defines no op {op!r}"
    newest = SCHEMAS[op][-1]
    assert lo <= newest <= hi, (
        f"onnx {onnx.__version__} defines {op} schema version {newest}, outside the range "
        f"{lo}..{hi} its converter declares: review what changed in {op}-{newest} "
        f"(onnx/defs, docs/Changelog.md), update the converter if needed, then widen its range "
        f"in onnx2snn/frontend/ops/ and regenerate docs/supported_ops.md")


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_range_covers_opset_9(op: str) -> None:
    lo, hi = REGISTRY[op].versions
    at9 = int(onnx.defs.get_schema(op, MIN_OPSET, "").since_version)
    assert lo <= at9, (f"{op}: the converter starts at schema version {lo}, but opset 9 (the "
                       f"oldest onnx2snn reads) uses {op}-{at9}")
    assert lo <= hi


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_opset_from_9_resolves(op: str) -> None:
    """At every opset from 9 to the newest, the op's schema version is one the converter takes."""
    for opset in range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1):
        assert why_unsupported(op, "", opset) is None, (op, opset)


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_converter_has_a_one_line_summary(op: str) -> None:
    """docs/supported_ops.md shows the first line of each converter's docstring."""
    assert REGISTRY[op].summary, f"the converter of {op} has no docstring"


def test_refused_ops_have_no_converter_and_give_their_hint() -> None:
    for op, hint in REFUSED.items():
        assert op not in CONVERTERS, op
        assert why_unsupported(op, "", 13) == hint


def test_unknown_domain_and_unknown_op() -> None:
    assert "custom domain" in (why_unsupported("Conv", "com.microsoft", 13) or "")
    assert why_unsupported("NoSuchOp", "", 13) == "no converter for this op"


def test_registering_twice_is_an_error() -> None:
    from onnx2snn.frontend.registry import converter

    with pytest.raises(TypeError, match="two converters claim Relu"):
        converter("Relu", versions=(1, 14))(lambda ctx, node: None)


def test_supported_ops_doc_is_up_to_date() -> None:
    """docs/supported_ops.md is generated from the registry; regenerate it when this fails."""
    from pathlib import Path

    from onnx2snn.frontend.supported_ops import render_supported_ops

    doc = Path(__file__).resolve().parents[1] / "docs" / "supported_ops.md"
    if not doc.exists():
        pytest.skip("no docs/ folder (tests run from an installed wheel)")
    assert doc.read_text(encoding="utf-8") == render_supported_ops(), (
        "docs/supported_ops.md is stale: run `./dev shell python tools/gen_supported_ops.py`")
