"""Accuracy against the number of time steps: one simulation to max(T), read at every T asked.

The ANN reference is onnxruntime on the original ONNX file (``onnx2snn.oracle``). Per T the table
holds the SNN's accuracy (when labels are given), its agreement with the ANN's argmax, the mean
absolute error of its readout against the ANN's outputs, the mean firing rate and the synaptic
operations per sample (SOPs) next to the ANN's multiply-accumulates (MACs). The simulation runs
in shards, here or in parallel (``onnx2snn.parallel``), with the same numbers either way; the
evaluation reports the peak resident memory of every process that took part. ``smallest_t_within``
reads, from the finished rows, the smallest T whose accuracy stays within 0.5 and 1 pp of the ANN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnx2snn.errors import DataError
from onnx2snn.ir.graph import Graph
from onnx2snn.parallel import peak_rss, run_sharded


@dataclass(frozen=True)
class EvalRow:
    """Metrics of the SNN read out after ``t`` steps."""

    t: int
    accuracy: float | None
    agreement: float | None
    mean_abs_error: float | None  # mean |SNN output − ANN output|; against the logits when
    # the frontend dropped a final softmax (oracle.estimated_output)
    firing_rate: float
    sops: float


@dataclass
class Evaluation:
    """The accuracy-vs-T table of one backend on one data set."""

    backend: str
    samples: int
    ann_accuracy: float | None
    ann_macs: int
    rows: list[EvalRow]
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # peak resident memory (bytes) of this process and of each worker process ("host:pid")
    peak_rss_bytes: int = 0
    worker_peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    # how the shards ran: {"engine": "this process" | "processes" | "ray", "workers", "shards"}
    execution: dict[str, Any] = field(default_factory=dict)
    # what computed the ANN's outputs: onnxruntime on the source model, or the project's own
    # executor when onnxruntime cannot load it (a newer opset)
    ann_reference: str = "onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: ``ann_accuracy`` and ``results``, a list of per-T rows."""
        d = asdict(self)
        d["results"] = d.pop("rows")
        d["smallest_t_within_pp"] = smallest_t_within(self.rows, self.ann_accuracy)
        return d


TOLERANCES_PP = (0.5, 1.0)  # the margins of smallest_t_within, in percentage points


def smallest_t_within(rows: list[EvalRow], ann_accuracy: float | None,
                      tolerances_pp: tuple[float, ...] = TOLERANCES_PP) -> dict[str, int | None]:
    """The smallest T of ``rows`` whose accuracy is within each tolerance of the ANN's.

    ``{"0.5": T or None, "1": T or None}``, keyed by the tolerance in percentage points: the
    first T (ascending) with accuracy ≥ ANN − tolerance/100 *and* every larger T evaluated too, so a
    lucky dip below the ANN line that recovers later does not count. None when no T qualifies or
    there is no labelled ANN accuracy. Rows are those of a finished evaluation (any order).
    """
    out: dict[str, int | None] = {}
    ordered = sorted(rows, key=lambda r: r.t)
    for tol in tolerances_pp:
        found: int | None = None
        if ann_accuracy is not None and all(r.accuracy is not None for r in ordered):
            for r in reversed(ordered):
                if r.accuracy is None or r.accuracy < ann_accuracy - tol / 100 - 1e-12:
                    break
                found = r.t
        out[f"{tol:g}"] = found
    return out


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Fraction of samples whose argmax equals the label (None without labels)."""
    if labels is None:
        return None
    return float((outputs.reshape(len(outputs), -1).argmax(axis=1) == labels).mean())


def evaluate_graph(graph: Graph, x: np.ndarray, y: np.ndarray | None, timesteps: list[int], *,
                   ann_outputs: np.ndarray | None = None, backend: str = "numpy",
                   batch_size: int = 256, show_progress: bool = False, workers: int = 1,
                   parallel: str = "processes", ray_address: str | None = None,
                   **options: Any) -> Evaluation:
    """Run ``graph`` on ``x`` up to max(timesteps) with ``backend`` and tabulate every T.

    The data set runs in shards of ``batch_size`` samples (``onnx2snn.parallel``): in this process,
    in ``workers`` processes, or on Ray (``parallel="ray"``, ``ray_address``); the table is the
    same bit for bit whichever ran them.
    """
    ts = sorted({int(t) for t in timesteps})
    if not ts or ts[0] < 1:
        raise DataError("timesteps must be positive integers")
    if y is not None and len(y) != len(x):
        raise DataError(f"{len(x)} inputs but {len(y)} labels")
    run = run_sharded(graph, x, ts, backend=backend, shard_size=batch_size, workers=workers,
                      engine="ray" if ray_address else parallel, ray_address=ray_address,
                      show_progress=show_progress, batch_size=batch_size, **options)
    result = run.totals
    notes = list(run.notes) if len(graph.outputs) == 1 else [
        f"the network has {len(graph.outputs)} outputs; evaluated the first, {graph.outputs[0]}",
        *run.notes]
    ann_arg = None if ann_outputs is None else ann_outputs.reshape(len(x), -1).argmax(axis=1)
    rows = []
    for i, t in enumerate(ts):
        p = run.predictions[i].reshape(len(x), -1)
        rows.append(EvalRow(
            t=t,
            accuracy=accuracy(p, y),
            agreement=None if ann_arg is None else float((p.argmax(axis=1) == ann_arg).mean()),
            mean_abs_error=None if ann_outputs is None else float(
                np.abs(p - ann_outputs.reshape(len(x), -1)).mean()),
            firing_rate=result.firing_rate(t),
            sops=result.sops_per_sample(t)))
    t_max = ts[-1]
    layers = {name: {"neurons": result.neurons[name],
                     "spikes_per_sample": float(counts[:t_max].sum()) / len(x),
                     "firing_rate": float(counts[:t_max].sum())
                     / (result.neurons[name] * len(x) * t_max)}
              for name, counts in result.spikes.items() if name in result.neurons}
    return Evaluation(backend, len(x), accuracy(ann_outputs, y) if ann_outputs is not None
                      else None, graph.macs(), rows, layers, notes,
                      peak_rss_bytes=peak_rss(), worker_peak_rss_bytes=run.worker_peak_rss,
                      execution={"engine": run.engine, "workers": run.workers,
                                 "shards": run.shards})
