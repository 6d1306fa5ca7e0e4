"""``onnx2snn evaluate OUT/ --data TEST.npz --timesteps 1,2,4,...``: accuracy against T.

One simulation to the largest T yields every smaller T. The ANN line is onnxruntime on the
original model (OUT/source.onnx). Output: a table, ``--json``, and ``--plot FILE.png``, each with
the peak resident memory of this process and of its workers (``--workers N``, ``--parallel ray``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import click
import numpy as np

from onnx2snn.artifacts import check_output_file, read_output_folder, write_output_file
from onnx2snn.backends.numpy.kernels import parse_kernels
from onnx2snn.backends.numpy.simulator import ENCODERS, SCHEDULES
from onnx2snn.cli.common import json_option, parallel_options, verbose_option, warn
from onnx2snn.cli.inspect_cmd import _table
from onnx2snn.cli.interrupt import exits_on_interrupt
from onnx2snn.data import load_dataset
from onnx2snn.errors import BackendError, DataError
from onnx2snn.evaluate import Evaluation, evaluate_graph, smallest_t_within
from onnx2snn.oracle import estimated_output, onnxruntime_outputs

BACKEND_NAMES = {"numpy": "numpy", "lava": "loihi", "loihi": "loihi", "nir": "nir"}


def parse_timesteps(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; a usage error names the bad entry."""
    hint = "'--timesteps' / '-T'"  # raised from the command body: click cannot name the option
    try:
        ts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give positive integers separated by commas",
                                 param_hint=hint) from None
    if not ts or min(ts) < 1:
        raise click.BadParameter(f"{text!r}: give positive integers separated by commas",
                                 param_hint=hint)
    return ts


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def format_evaluation(ev: Evaluation) -> str:
    """The table of an evaluation."""
    head = [f"backend: {ev.backend}, {ev.samples} samples, ANN: {ev.ann_macs:,} MACs/sample",
            f"ANN accuracy ({ev.ann_reference}): {_pct(ev.ann_accuracy)}", ""]
    rows = [["T", "accuracy", "agrees with ANN", "|out - ANN|", "firing rate", "SOPs/sample"]]
    for r in ev.rows:
        rows.append([str(r.t), _pct(r.accuracy), _pct(r.agreement),
                     "-" if r.mean_abs_error is None else f"{r.mean_abs_error:.4f}",
                     f"{r.firing_rate:.4f}", f"{r.sops:,.0f}"])
    return "\n".join(head + _table(rows, right=set(range(6))) + format_smallest_t(ev) + ev.notes
                     + ["", format_memory(ev)])


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def format_memory(ev: Evaluation) -> str:
    """One line: how the shards ran and the peak resident memory of each process."""
    ex = ev.execution
    where = (f"{ex.get('shards', 1)} shard(s) on "
             + ("this process" if ex.get("engine") == "this process" else
                f"{ex.get('workers')} worker process(es)" if ex.get("engine") == "processes" else
                "Ray"))
    line = f"{where}; peak memory (RSS): {_mb(ev.peak_rss_bytes)} this process"
    if ev.worker_peak_rss_bytes:
        peaks = list(ev.worker_peak_rss_bytes.values())
        line += (f", {_mb(max(peaks))} the largest of {len(peaks)} worker(s)"
                 f" ({_mb(sum(peaks))} together)")
    return line


def format_smallest_t(ev: Evaluation) -> list[str]:
    """'smallest T within 0.5 pp of the ANN: 16; within 1 pp: 8' (nothing without labels)."""
    if ev.ann_accuracy is None or any(r.accuracy is None for r in ev.rows):
        return []
    found = smallest_t_within(ev.rows, ev.ann_accuracy)
    parts = [f"within {tol} pp: " + (str(t) if t is not None else f"none up to T={ev.rows[-1].t}")
             for tol, t in found.items()]
    return ["", "smallest T (from this one on) " + "; ".join(parts)]


def format_layers(ev: Evaluation) -> str:
    """Per-population spike counts and firing rates at the largest T."""
    t = ev.rows[-1].t
    rows = [["population", "neurons", f"spikes/sample (T={t})", "firing rate"]]
    for name, d in ev.layers.items():
        rows.append([name, f"{int(d['neurons']):,}", f"{d['spikes_per_sample']:,.1f}",
                     f"{d['firing_rate']:.4f}"])
    return "\n".join(_table(rows, right={1, 2, 3}))


def plot_evaluation(ev: Evaluation, path: str) -> None:
    """Accuracy (or agreement, without labels) against T, log-scaled T axis, with the ANN line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("--plot needs matplotlib (pip install matplotlib)") from None
    use_acc = ev.rows[0].accuracy is not None
    # every row has an accuracy when the first has (same labels); a missing agreement plots as 0
    ys = [100 * ((r.accuracy if use_acc else r.agreement) or 0.0) for r in ev.rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.t for r in ev.rows], ys, "o-", label=f"SNN ({ev.backend})")
    if use_acc and ev.ann_accuracy is not None:
        ax.axhline(100 * ev.ann_accuracy, color="k", ls="--", label="ANN (onnxruntime)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)" if use_acc else "agreement with ANN (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=plot_format(path), dpi=120)
    plt.close(fig)
    write_output_file(path, buf.getvalue())


def plot_format(path: str) -> str:
    """The image format named by ``path``'s suffix; a usage error if matplotlib cannot write it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DataError("--plot needs matplotlib (pip install matplotlib)") from None
    fmt = Path(path).suffix.lower().lstrip(".") or "png"
    known = Figure().canvas.get_supported_filetypes()
    if fmt not in known:
        raise click.BadParameter(f"{path!r}: cannot draw a .{fmt} file; use one of "
                                 f"{', '.join('.' + k for k in sorted(known))}",
                                 param_hint="'--plot'")
    return fmt


def _check_kernels(ctx: click.Context, param: click.Parameter, text: str) -> str:
    """Refuse an unknown --kernels mode or execution provider before anything runs."""
    try:
        parse_kernels(text)
    except BackendError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from e
    return text


@click.command()
@click.argument("converted", metavar="OUT/", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Test data: .npz with x [and y labels], or .npy of x.")
@click.option("--timesteps", "-T", default="1,2,4,8,16,32,64,128", show_default=True,
              help="Comma-separated time steps to read the prediction at.")
@click.option("--backend", type=click.Choice(list(BACKEND_NAMES)), default="numpy",
              show_default=True, help="Which executable form to run.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="ideal", show_default=True,
              help="numpy backend: ideal (no synaptic delay) or loihi (one step per synapse).")
@click.option("--encoder", type=click.Choice(ENCODERS), default="direct", show_default=True,
              help="Input encoding: direct (analog every step) or poisson (seeded spikes, "
                   "each value in [0, 1] a probability; values outside are clipped, with a "
                   "warning).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the encoder.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="numpy backend: floating-point precision of the simulation.")
@click.option("--layers", "show_layers", is_flag=True,
              help="Also print spike counts and firing rates per population.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N samples.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Samples simulated at once, at most (fewer when --memory asks for it, or for a "
                   "cache-sized working set; results do not change).")
@click.option("--memory", default=None, metavar="SIZE",
              help="numpy backend: memory budget of the simulation (per process), e.g. 4GB or "
                   "512MiB; it picks how many samples and time steps run at once (results do "
                   "not change). Default: half the available memory, at most 4 GiB.")
@click.option("--kernels", default="auto", show_default=True, callback=_check_kernels,
              metavar="auto|onnxruntime|numpy[:PROVIDERS]",
              help="numpy backend: synapse layers through onnxruntime (auto: with 1x1 "
                   "convolutions in NumPy on the CPU; onnxruntime: all of them) or NumPy (numpy). "
                   "onnxruntime's execution providers may follow, e.g. "
                   "onnxruntime:CUDAExecutionProvider,CPUExecutionProvider; default: CUDA first "
                   "when onnxruntime has it, then the CPU.")
@parallel_options("numpy and nir backends")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw accuracy against T into this PNG file.")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@verbose_option
@exits_on_interrupt
def evaluate_cmd(converted: str, data_path: str, timesteps: str, backend: str, schedule: str,
                 encoder: str, seed: int, dtype: str, show_layers: bool, limit: int | None,
                 batch_size: int, memory: str | None, kernels: str, workers: int,
                 parallel: str, ray_address: str | None,
                 plot_path: str | None, as_json: bool, quiet: bool) -> None:
    """Accuracy of a converted network against the number of time steps T.

    Ctrl-C (or SIGTERM) stops the run, Lava's processes included: exit code 130 (143 for
    SIGTERM), one line on stderr, nothing else written.

    Example: onnx2snn evaluate out/ --data models/digits_test.npz --timesteps 1,2,4,8,16,32
    """
    ts = parse_timesteps(timesteps)
    if plot_path:  # refuse a plot that cannot be written before the simulation, not after it
        plot_format(plot_path)
        check_output_file(plot_path)
    if Path(converted).suffix == ".nir":  # a NIR file (ours or another tool's): NIR semantics
        from onnx2snn.backends.nir import from_nir

        folder, graph, backend = None, from_nir(converted), "nir"
    else:
        folder = read_output_folder(converted)
        graph = folder.graph
    data = load_dataset(data_path, graph[graph.inputs[0]].shape, limit=limit,
                        n_classes=int(np.prod(graph[graph.outputs[0]].shape)))
    if encoder == "poisson" and BACKEND_NAMES[backend] == "numpy":
        outside = int(np.count_nonzero((data.x < 0) | (data.x > 1)))
        if outside:
            warn(f"--encoder poisson reads each input value as a spike probability: {outside:,} "
                 f"of {data.x.size:,} values lie outside [0, 1] and are clipped to it (data "
                 "normalised to mean 0 loses its negative values); use --encoder direct, or "
                 "give the data scaled to [0, 1]")
    ann = None
    fallback: list[warnings.WarningMessage] = []
    if folder is not None and folder.source is not None and folder.source.is_file():
        with warnings.catch_warnings(record=True) as fallback:  # onnxruntime could not load it
            warnings.simplefilter("always")
            ann = onnxruntime_outputs(folder.source, data.x, batch_size,
                                      estimated_output(graph.meta))
    options = {"schedule": schedule, "encoder": encoder, "seed": seed,
               "dtype": np.dtype(dtype).type, "memory": memory, "kernels": kernels} \
        if BACKEND_NAMES[backend] == "numpy" else \
        {"artifact_dir": None if folder is None else str(folder.path)}
    ev = evaluate_graph(graph, data.x, data.y, ts, ann_outputs=ann, backend=BACKEND_NAMES[backend],
                        batch_size=batch_size, show_progress=not quiet and not as_json,
                        workers=workers, parallel=parallel, ray_address=ray_address, **options)
    if fallback:
        ev.ann_reference = "onnx2snn executor"
    for w in fallback:
        ev.notes.append(f"note: {w.message}")
        warnings.warn(str(w.message), stacklevel=1)
    if ann is None:
        ev.notes.append("no source ONNX model in the folder: no ANN reference" if folder else
                        "a NIR file carries no ANN: no ANN reference")
    if plot_path:
        plot_evaluation(ev, plot_path)
    if as_json:
        click.echo(json.dumps(ev.to_dict(), indent=2))
    else:
        click.echo(format_evaluation(ev))
        if show_layers:
            click.echo("\n" + format_layers(ev))
