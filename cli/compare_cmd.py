"""``onnx2snn compare MODEL.onnx --targets numpy,nir[,loihi] --calib C --data D -T 32``.

Converts once and runs each target's executable form on the same inputs (library:
``onnx2snn.compare``); prints a table or ``--json``; exits 5 when targets that must agree do not.
"""

from __future__ import annotations

import json

import click
import numpy as np

from onnx2snn.backends.nir.export import NIR_POOL_MODES, NIR_RESET_MODES
from onnx2snn.cli.common import model_argument, output_option, parallel_options, verbose_option, warn
from onnx2snn.cli.convert_cmd import make_recipe, recipe_options_defaulting_to
from onnx2snn.cli.inspect_cmd import _table
from onnx2snn.cli.interrupt import exits_on_interrupt
from onnx2snn.compare import LAVA_LIMIT, TARGETS, Comparison, compare, no_target_could_run
from onnx2snn.convert import Recipe
from onnx2snn.data import load_dataset
from onnx2snn.frontend import convert_model, load_model


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.2f} pp" if signed else f"{100 * v:.2f}%"


def format_comparison(c: Comparison) -> str:
    """The text table of a comparison."""
    head = [f"model: {c.model}, {c.samples} samples, T = {c.timesteps}",
            f"ANN accuracy (onnxruntime): {_pct(c.ann_accuracy)}; reference (numpy, ideal, "
            f"float64): {_pct(c.reference_accuracy)}", ""]
    rows = [["target", "status", "samples", "accuracy", "Δ vs reference", "agrees with ANN",
             "agrees with ref", "spikes differing", "relation"]]
    for t in c.targets:
        spikes = "-" if t.spike_mismatches is None else f"{t.spike_mismatches}/{t.spikes_compared}"
        rows.append([t.target, t.status, "-" if t.samples is None else str(t.samples),
                     _pct(t.accuracy), _pct(t.accuracy_delta, signed=True),
                     _pct(t.agreement_with_ann), _pct(t.agreement_with_reference), spikes,
                     t.relation])
    lines = head + _table(rows, right={2, 3, 4, 5, 6, 7})
    for t in c.targets:
        if t.note:
            lines.append(f"  {t.target}: {t.note}")
    return "\n".join(lines)


@click.command()
@model_argument
@click.option("--targets", default="numpy,nir", show_default=True,
              help=f"Comma-separated targets to compare ({', '.join(TARGETS)}).")
@click.option("--calib", "calib_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration data: .npz with x [and y], or .npy of x.")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Test data: .npz with x [and y labels], or .npy of x.")
@click.option("--timesteps", "-T", type=click.IntRange(1), default=32, show_default=True,
              help="Number of time steps.")
@click.option("--nir-reset", type=click.Choice(NIR_RESET_MODES), default="zero",
              show_default=True,
              help="NIR export: zero (NIR IF, read by every consumer; differs by design from a "
                   "subtract-reset network) or exact (I -> Threshold -> Scale loop: must match "
                   "the reference spike for spike).")
@click.option("--nir-pool", type=click.Choice(NIR_POOL_MODES), default="sum", show_default=True,
              help="NIR export of average pooling: SumPool2d (1/k² folded into the next "
                   "weights) or AvgPool2d.")
@click.option("--nir-dtype", type=click.Choice(["float64", "float32"]), default="float64",
              show_default=True,
              help="Precision of the NIR file's arrays (float32 rounds the folded weights, which "
                   "can flip a few near-threshold spikes).")
@recipe_options_defaulting_to("p99.9, v0 = 0, no corrections: one conversion that every "
                              "target can run")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N samples.")
@click.option("--lava-limit", type=click.IntRange(0), default=LAVA_LIMIT, show_default=True,
              help="--targets loihi: run Lava (about 1000x slower than the reference) on the "
                   "first N samples only, where it must equal the fixed-point simulator message "
                   "for message; every other target runs on all samples. 0 skips Lava.")
@parallel_options("every target but Lava, which runs in this process")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_option
@verbose_option
@exits_on_interrupt
def compare_cmd(model: str, targets: str, calib_path: str, data_path: str, timesteps: int,
                nir_reset: str, nir_pool: str, nir_dtype: str, norm: str | None,
                percentile: float | None, reset: str | None, v0: str | None, maxpool: str,
                ceiling: bool, bias_correction: bool | None, gain_calibration: bool | None,
                correction_steps: int | None, calib_samples: int, batch_size: int,
                limit: int | None, lava_limit: int, workers: int, parallel: str,
                ray_address: str | None, as_json: bool, quiet: bool, output: str | None) -> None:
    """Convert MODEL.onnx once and hold every target's executable form against the ANN
    (onnxruntime) and the reference simulator. Exits 5 when targets that must agree do not.

    --targets loihi gives two rows: loihi, the network quantized for Loihi 2 in the fixed-point
    simulator (all samples), and lava, the same network in Lava's fixed_pt simulator on the first
    --lava-limit samples, which must equal the fixed-point simulator exactly. Ctrl-C (or SIGTERM)
    stops it, Lava's processes included: exit code 130 (143), one line on stderr.

    A target that cannot express the network is skipped with a note; when none of those asked
    for can, the network is refused before calibration (exit code 4).

    --workers N (or --parallel ray) runs the simulations in shards of --batch-size samples on N
    processes or a Ray cluster; the table equals that of one process bit for bit (docs/parallel.md).

    Example: onnx2snn compare models/digits_cnn.onnx --targets numpy,nir --calib
    models/digits_calib.npz --data models/digits_test.npz -T 32
    """
    names = [t.strip() for t in targets.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        raise click.BadParameter(f"{targets!r}: choose from {', '.join(TARGETS)}",
                                 param_hint="--targets")
    recipe = make_recipe(Recipe(), maxpool, ceiling, norm=norm, percentile=percentile,
                         reset=reset, v0=v0, bias_correction=bias_correction,
                         gain_calibration=gain_calibration, correction_steps=correction_steps)
    shape = convert_model(load_model(model), output=output)
    in_shape = shape[shape.inputs[0]].shape
    calib = load_dataset(calib_path, in_shape, limit=calib_samples)
    data = load_dataset(data_path, in_shape, limit=limit,
                        n_classes=int(np.prod(shape[shape.outputs[0]].shape)))
    result = compare(model, calib.x, data.x, data.y, names, timesteps, recipe=recipe,
                     nir_reset=nir_reset, nir_pool=nir_pool, nir_dtype=np.dtype(nir_dtype).type,
                     batch_size=batch_size, lava_limit=lava_limit, output=output,
                     workers=workers, parallel=parallel, ray_address=ray_address,
                     show_progress=not quiet and not as_json)
    for note in result.notes:
        warn(note)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_comparison(result))
    if all(t.status == "skipped" for t in result.targets):
        raise no_target_could_run([t.note for t in result.targets])
    result.raise_on_failure()


__all__ = ["compare_cmd", "format_comparison"]
