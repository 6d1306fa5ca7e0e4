"""Hold the executable forms of one converted network against each other (``onnx2snn compare``).

The model is converted once. The ANN oracle is onnxruntime on the original ONNX file; the
reference is the numpy simulator (ideal schedule, float64) on the SNN graph — the executable form
of the time-step contract. Every other target runs its own executable form on the same inputs:

* ``numpy``: the reference itself;
* ``nir``: the graph written with ``nir.write``, read back with ``nir.read`` and simulated under
  NIR's semantics. With the same reset as the recipe (``exact`` for subtract, ``zero`` for zero)
  it must equal the reference spike for spike; otherwise (NIR's default reset to zero of a
  subtract-reset network) it differs by design and only the accuracy delta is reported;
* ``loihi``: the loihi backend's ``run`` (fixed point, loihi schedule: differs by design); skipped
  with a note when that backend cannot run here or cannot express the network.

``Comparison.failures`` lists every pair that must agree and does not; the CLI exits 5 on them.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnx2snn.backends import get_backend
from onnx2snn.backends.numpy.simulator import simulate
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import BackendError, CheckFailedError, Onnx2SnnError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.spiking import IF
from onnx2snn.oracle import onnxruntime_outputs

TARGETS = ("numpy", "nir", "loihi")


@dataclass
class TargetResult:
    """One target's figures at T steps, against the ANN and against the reference."""

    target: str
    status: str  # "ok", "failed" (must agree and does not) or "skipped"
    relation: str  # how it must relate to the reference
    accuracy: float | None = None
    agreement_with_ann: float | None = None
    agreement_with_reference: float | None = None
    accuracy_delta: float | None = None  # accuracy - reference accuracy
    spike_mismatches: int | None = None
    spikes_compared: int | None = None
    max_prediction_diff: float | None = None
    note: str = ""


@dataclass
class Comparison:
    """Results of ``compare``: one row per target, plus the ANN's figures."""

    model: str
    samples: int
    timesteps: int
    ann_accuracy: float | None
    reference_accuracy: float | None
    targets: list[TargetResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [f"{t.target}: {t.note}" for t in self.targets if t.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = self.failures
        return d

    def raise_on_failure(self) -> None:
        """``CheckFailedError`` (exit code 5) if targets that must agree did not."""
        if self.failures:
            raise CheckFailedError("targets that must agree did not:\n  "
                                   + "\n  ".join(self.failures))


def _acc(pred: np.ndarray, y: np.ndarray | None) -> float | None:
    return None if y is None else float((pred.argmax(axis=1) == y).mean())


def _pred(result: Any, t: int, n: int) -> np.ndarray:
    p = next(iter(result.predictions.values()))  # the first output, as evaluate does
    return np.asarray(p[t - 1]).reshape(n, -1)


def compare(model: str | os.PathLike[str], calib_x: np.ndarray, x: np.ndarray,
            y: np.ndarray | None, targets: list[str], timesteps: int, *,
            recipe: Recipe | None = None, nir_reset: str = "zero", nir_pool: str = "sum",
            nir_dtype: Any = np.float64, batch_size: int = 256) -> Comparison:
    """Convert ``model`` once and compare ``targets`` on ``x`` at ``timesteps`` steps."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise BackendError(f"unknown compare target(s) {', '.join(unknown) or '(none)'}; choose "
                           f"from {', '.join(TARGETS)}")
    recipe = recipe or Recipe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conv = convert(model, calib_x, recipe, batch_size=batch_size)
    snn = conv.snn
    n = len(x)
    ann = onnxruntime_outputs(model, x, batch_size).reshape(n, -1)
    ann_arg = ann.argmax(axis=1)
    pops = [p.name for p in snn.nodes if isinstance(p, IF)]
    ref = simulate(snn, x, timesteps, dtype=np.float64, record=pops, batch_size=batch_size)
    ref_pred = _pred(ref, timesteps, n)
    ref_acc = _acc(ref_pred, y)
    out = Comparison(str(model), n, timesteps, _acc(ann, y), ref_acc,
                     notes=[str(w.message) for w in caught])

    def row(target: str, relation: str, pred: np.ndarray, **kw: Any) -> TargetResult:
        acc = _acc(pred, y)
        return TargetResult(
            target=target, status=kw.pop("status", "ok"), relation=relation, accuracy=acc,
            agreement_with_ann=float((pred.argmax(axis=1) == ann_arg).mean()),
            agreement_with_reference=float((pred.argmax(axis=1) == ref_pred.argmax(axis=1)).mean()),
            accuracy_delta=None if acc is None or ref_acc is None else acc - ref_acc,
            max_prediction_diff=float(np.abs(pred - ref_pred).max()), **kw)

    for target in targets:
        if target == "numpy":
            out.targets.append(row("numpy", "is the reference (ideal schedule, float64)", ref_pred))
        elif target == "nir":
            out.targets.append(_compare_nir(snn, x, timesteps, ref, pops, row, nir_reset, nir_pool,
                                            nir_dtype, batch_size))
        elif target == "loihi":
            out.targets.append(_compare_loihi(snn, calib_x, x, timesteps, row, batch_size))
    return out


def _compare_nir(snn: Graph, x: np.ndarray, timesteps: int, ref: Any, pops: list[str], row: Any,
                 nir_reset: str, nir_pool: str, nir_dtype: Any, batch_size: int) -> TargetResult:
    from onnx2snn.backends.nir import from_nir, write_nir
    from onnx2snn.backends.nir.export import nir_name

    problems = get_backend("nir").check(snn, nir_reset=nir_reset, nir_pool=nir_pool)
    if problems:
        return TargetResult("nir", "skipped", "-", note="NIR cannot express this network: "
                            + "; ".join(problems))
    resets = {p.reset for p in snn.nodes if isinstance(p, IF)}
    same = resets <= {"subtract"} if nir_reset == "exact" else resets <= {"zero"}
    with tempfile.TemporaryDirectory(prefix="onnx2snn-compare-") as tmp:
        path = write_nir(snn, Path(tmp) / "network.nir", reset=nir_reset, pool=nir_pool,
                         dtype=nir_dtype)
        graph = from_nir(path)
    names = {p: nir_name(p) for p in pops}
    res = simulate(graph, x, timesteps, dtype=np.float64, record=list(names.values()),
                   batch_size=batch_size)
    pred = _pred(res, timesteps, len(x))
    dtype_name = np.dtype(nir_dtype).name
    if not same:
        return row("nir", f"differs by design (NIR reset {nir_reset}, network reset "
                   f"{'/'.join(sorted(resets))}): accuracy delta", pred,
                   note=f"file arrays {dtype_name}; use --nir-reset exact for a spike-for-spike "
                        "check")
    mismatches = sum(int(((ref.recorded[p] > 0) != (res.recorded[q] > 0)).sum())
                     for p, q in names.items())
    total = sum(int(ref.recorded[p].size) for p in pops)
    ok = mismatches == 0
    note = (f"file arrays {dtype_name}; {mismatches} of {total} spikes differ" if not ok
            else f"file arrays {dtype_name}; spike for spike equal ({total} spike slots)")
    return row("nir", f"must equal the reference spike for spike (NIR reset {nir_reset})", pred,
               status="ok" if ok else "failed", spike_mismatches=mismatches,
               spikes_compared=total, note=note)


def _compare_loihi(snn: Graph, calib_x: np.ndarray, x: np.ndarray, timesteps: int, row: Any,
                   batch_size: int) -> TargetResult:
    relation = "differs by design (fixed point, loihi schedule): accuracy delta"
    try:
        backend = get_backend("loihi")
        problems = backend.check(snn)
        if problems:
            return TargetResult("loihi", "skipped", relation,
                                note="the loihi target cannot express this network: "
                                     + "; ".join(problems))
        result = backend.run(snn, x, timesteps, calib_x=calib_x, batch_size=batch_size)
    except NotImplementedError as e:
        return TargetResult("loihi", "skipped", relation, note=f"the loihi backend cannot run: {e}")
    except (Onnx2SnnError, ImportError) as e:
        return TargetResult("loihi", "skipped", relation,
                            note=f"the loihi backend cannot run here: {e}")
    return row("loihi", relation, _pred(result, timesteps, len(x)))


__all__ = ["TARGETS", "Comparison", "TargetResult", "compare"]
