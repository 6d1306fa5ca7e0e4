"""``onnx2snn inspect MODEL.onnx``: the ANN graph node by node, totals, and what cannot convert.

All the work is ``onnx2snn.inspect.inspect_model``; this module formats its report as a table (or
``--json``) and exits 4 when the model has unsupported nodes.
"""

from __future__ import annotations

import json
import textwrap

import click

from onnx2snn import inspect as inspect_lib
from onnx2snn.cli.common import (
    drop_option,
    error,
    json_option,
    model_argument,
    output_option,
    verbose_option,
    warn,
    warn_dropped,
)
from onnx2snn.inspect import InspectReport


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_report(report: InspectReport) -> str:
    """The text form of an inspect report."""
    out = [f"model: {report.source}",
           f"  ONNX opset {report.opset}, IR version {report.ir_version}"
           + (f", producer {report.producer}" if report.producer else ""),
           "  ONNX ops: " + ", ".join(f"{op} x{k}" for op, k in report.onnx_ops.items()),
           ""]
    if report.converts:
        out.append("ANN graph (batch axis excluded from shapes):")
    else:
        out.append("partial ANN graph: what converted before the unsupported nodes (not simplified, "
                   "BatchNorm not folded yet):")
    rows = [["#", "name", "op", "output shape", "params", "MACs", "details", "from ONNX"]]
    for i, r in enumerate(report.nodes):
        rows.append([str(i), r.name, r.kind, _shape(r.shape), f"{r.params:,}", f"{r.macs:,}",
                     r.detail, ", ".join(r.origin)])
    out += ["  " + line for line in _table(rows, right={0, 4, 5})]
    out.append("")
    out.append("summary:")
    what = "nodes" if report.converts else "nodes converted so far"
    out.append(f"  {len(report.nodes)} {what}, {report.n_params:,} parameters, "
               f"{report.macs:,} MACs per sample")
    if report.converts:
        out.append("  inputs: " + ", ".join(f"{k} {_shape(v)}" for k, v in report.inputs.items()))
        out.append("  outputs: " + ", ".join(report.outputs))
    out.append("  dropped terminal softmax: " + (", ".join(report.dropped) or "none"))
    out.append(f"  ONNX opset: {report.opset}")
    if report.drop_ops:
        out.append("  dropped on request (--drop): " + ", ".join(report.drop_ops))
    for w in report.warnings:
        out.append(f"  warning: {w}")
    if report.converts:
        out.append("  converts: yes")
    else:
        n = len(report.problems)
        out.append(f"  converts: no, {n} unsupported node{'s' if n != 1 else ''}:")
        for op, reason, names in report.problem_groups():
            out.append(f"    {op} ({len(names)}): {', '.join(names)}")
            out += textwrap.wrap(reason, width=96, initial_indent="      hint: ",
                                 subsequent_indent="            ")
    return "\n".join(out)


@click.command()
@model_argument
@json_option
@drop_option
@output_option
@verbose_option
def inspect(model: str, as_json: bool, drop_ops: tuple[str, ...], output: str | None) -> None:
    """Show the ANN graph of MODEL.onnx and whether it can be converted.

    Prints one row per node of the ANN graph (op, output shape, parameters, MACs, settings, the
    ONNX nodes it came from) and a summary. When some nodes cannot be converted it prints what
    did convert, then every unsupported node with a hint, and exits with code 4.
    """
    warn_dropped(drop_ops)
    report = inspect_lib.inspect_model(model, drop_ops, output)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report))
    for w in report.warnings:
        warn(w)
    if not report.converts:
        ops = sorted({p.op for p in report.problems})
        error(f"{model}: cannot convert {len(report.problems)} node(s) of op type(s) "
              f"{', '.join(ops)} (listed above)")
        raise click.exceptions.Exit(report.exit_code)
