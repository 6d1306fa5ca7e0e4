"""Hold the executable forms of one converted network against each other (``onnx2snn compare``).

The model is converted once. The ANN oracle is onnxruntime on the original ONNX file; the
reference is the numpy simulator (ideal schedule, float64) on the SNN graph — the executable form
of the time-step contract. Every other target runs its own executable form on the same inputs:

* ``numpy``: the reference itself;
* ``nir``: the graph written with ``nir.write``, read back with ``nir.read`` and simulated under
  NIR's semantics. With the same reset as the recipe (``exact`` for subtract, ``zero`` for zero)
  it must equal the reference spike for spike; otherwise (NIR's default reset to zero of a
  subtract-reset network) it differs by design and only the accuracy delta is reported;
* ``loihi``: two rows. ``loihi``: the network quantized for Loihi 2 and run by the fixed-point
  reference simulator (``simulate_fixed``) on every sample (fixed point, loihi schedule: differs
  by design). ``lava``: the same quantized graph in Lava's ``fixed_pt`` CPU simulator, which is
  ~1000× slower, so on the first ``lava_limit`` samples only: it must equal the fixed-point
  simulator exactly, every population's messages and the readout's currents and predictions at
  every step. Skipped with a note when the loihi target cannot express the network, or Lava
  cannot run here.

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

from onnx2snn.backends import cannot_express_message, get_backend
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.backends.numpy.simulator import simulate
from onnx2snn.convert import Recipe, convert_ann
from onnx2snn.convert.preflight import outline_snns
from onnx2snn.errors import BackendError, CheckFailedError, Onnx2SnnError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.loihi import LoihiNeuron
from onnx2snn.ir.serialize import graph_to_bytes
from onnx2snn.ir.spiking import IF
from onnx2snn.oracle import chosen_output, onnxruntime_outputs
from onnx2snn.parallel import check_engine, graph_in_worker, peak_rss, process_id, run_shards, shard_bounds

TARGETS = ("numpy", "nir", "loihi")
LAVA_LIMIT = 20  # default number of samples Lava runs on


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
    spike_mismatches: int | None = None  # spikes (messages, for lava) that differ
    spikes_compared: int | None = None
    max_prediction_diff: float | None = None
    samples: int | None = None  # how many of the samples it ran on (the first ones)
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


@dataclass
class CompareShard:
    """What one shard of samples [start, start + n) yields for ``compare``: the predictions at T of
    the reference, the NIR read-back and the fixed-point simulator (None when not compared),
    the NIR populations' spikes that differ from the reference's and how many were compared, and
    the process that ran it (``host:pid``) with its peak RSS."""

    start: int
    reference: np.ndarray
    nir: np.ndarray | None
    nir_mismatches: int
    nir_slots: int
    fixed: np.ndarray | None
    worker: str
    peak_rss: int


def compare_shard(snn: Graph, nir: Graph | None, nir_names: dict[str, str], fixed: Graph | None,
                  timesteps: int, batch_size: int, x: np.ndarray, start: int,
                  threads: int | None = None) -> CompareShard:
    """Run the forms on the shard ``x`` (first sample ``start``): the reference (numpy, ideal,
    float64) on ``snn``, the NIR read-back ``nir`` (spikes compared population by population
    through ``nir_names``, {IR name: file name}, when it is given), the quantized ``fixed``
    graph in ``simulate_fixed``. ``threads``: BLAS threads (those of the calling process)."""
    from threadpoolctl import threadpool_limits

    n = len(x)
    with threadpool_limits(limits=threads, user_api="blas"):
        ref = simulate(snn, x, timesteps, dtype=np.float64, record=list(nir_names),
                       batch_size=batch_size, first_sample=start)
        mismatches = slots = 0
        nir_pred = None
        if nir is not None:
            res = simulate(nir, x, timesteps, dtype=np.float64, record=list(nir_names.values()),
                           batch_size=batch_size, first_sample=start)
            nir_pred = _pred(res, timesteps, n)
            for p, q in nir_names.items():
                mine = ref.recorded[p] > 0
                mismatches += int((mine != (res.recorded[q].reshape(mine.shape) > 0)).sum())
                slots += int(mine.size)
        fixed_pred = None
        if fixed is not None:
            fixed_pred = _pred(simulate_fixed(fixed, x, timesteps, batch_size=batch_size,
                                              first_sample=start), timesteps, n)
    return CompareShard(start, _pred(ref, timesteps, n), nir_pred, mismatches, slots, fixed_pred,
                        process_id(), peak_rss())


def compare_shard_of_bytes(snn: bytes, nir: bytes | None, nir_names: dict[str, str],
                           fixed: bytes | None, timesteps: int, batch_size: int, x: np.ndarray,
                           start: int, threads: int | None) -> CompareShard:
    """``compare_shard`` in a worker process, given the graphs as ``graph_to_bytes``."""
    return compare_shard(graph_in_worker(snn, "numpy"),
                         None if nir is None else graph_in_worker(nir, "nir"), nir_names,
                         None if fixed is None else graph_in_worker(fixed, "numpy"), timesteps,
                         batch_size, x, start, threads)


@dataclass
class _Forms:
    """The executable forms to compare, made once in the calling process."""

    nir: Graph | None = None
    nir_names: dict[str, str] = field(default_factory=dict)  # IR population -> NIR file name
    nir_same: bool = False  # must equal the reference spike for spike
    nir_relation: str = ""
    nir_note: str = ""
    fixed: Graph | None = None
    skipped: dict[str, TargetResult] = field(default_factory=dict)


def compare(model: str | os.PathLike[str], calib_x: np.ndarray, x: np.ndarray,
            y: np.ndarray | None, targets: list[str], timesteps: int, *,
            recipe: Recipe | None = None, nir_reset: str = "zero", nir_pool: str = "sum",
            nir_dtype: Any = np.float64, batch_size: int = 256,
            lava_limit: int = LAVA_LIMIT, output: str | None = None, workers: int = 1,
            parallel: str = "processes", ray_address: str | None = None,
            show_progress: bool = False) -> Comparison:
    """Convert ``model`` once and compare ``targets`` on ``x`` at ``timesteps`` steps (Lava on the
    first ``lava_limit`` samples only); ``output`` chooses the model output (``--output``).

    The simulations run in shards of ``batch_size`` samples, in this process, on ``workers``
    processes or on Ray (``parallel``, ``ray_address``; see ``onnx2snn.parallel``); predictions
    are concatenated in sample order and spike counts added, so every figure is that of one
    process bit for bit. Lava runs in this process.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise BackendError(f"unknown compare target(s) {', '.join(unknown) or '(none)'}; choose "
                           f"from {', '.join(TARGETS)}")
    engine = "ray" if ray_address else parallel
    check_engine(engine, workers, "numpy")
    recipe = recipe or Recipe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = onnx_to_ann(model, output=output)
        refused = preflight(graph, calib_x, recipe, targets, nir_reset, nir_pool, batch_size)
        if all(refused.get(t) for t in targets):  # before calibration: nothing would run
            raise no_target_could_run([cannot_express_note(t, refused[t]) for t in targets])
        conv = convert_ann(graph, calib_x, recipe, batch_size=batch_size)
        snn = conv.snn
        n = len(x)
        ann = onnxruntime_outputs(model, x, batch_size, chosen_output(snn.meta)).reshape(n, -1)
    ann_arg = ann.argmax(axis=1)
    forms = _Forms()
    with tempfile.TemporaryDirectory(prefix="onnx2snn-compare-") as tmp:
        if "nir" in targets:
            _nir_form(snn, forms, nir_reset, nir_pool, nir_dtype, Path(tmp))
        if "loihi" in targets:
            _loihi_form(snn, calib_x, forms)
    bounds = shard_bounds(n, batch_size)
    if not bounds:
        raise BackendError("no inputs to compare")
    names = forms.nir_names if forms.nir_same else {}

    def local(xs: np.ndarray, start: int, update: Any) -> CompareShard:
        shard = compare_shard(snn, forms.nir, names, forms.fixed, timesteps, batch_size, xs, start)
        update(len(xs))
        return shard

    shared = (graph_to_bytes(snn), None if forms.nir is None else graph_to_bytes(forms.nir), names,
              None if forms.fixed is None else graph_to_bytes(forms.fixed), timesteps, batch_size)
    shards, _, _ = run_shards(local, compare_shard_of_bytes, shared, x, bounds, workers=workers,
                              engine=engine, ray_address=ray_address,
                              desc=f"comparing (T={timesteps})", show_progress=show_progress)
    shards.sort(key=lambda sh: sh.start)
    ref_pred = np.concatenate([sh.reference for sh in shards])
    ref_acc = _acc(ref_pred, y)
    out = Comparison(str(model), n, timesteps, _acc(ann, y), ref_acc,
                     notes=[str(w.message) for w in caught])

    def row(target: str, relation: str, pred: np.ndarray, **kw: Any) -> TargetResult:
        m = len(pred)  # the first m samples
        yy = None if y is None else y[:m]
        acc, ref_m = _acc(pred, yy), _acc(ref_pred[:m], yy)
        return TargetResult(
            target=target, status=kw.pop("status", "ok"), relation=relation, accuracy=acc,
            agreement_with_ann=float((pred.argmax(axis=1) == ann_arg[:m]).mean()),
            agreement_with_reference=float(
                (pred.argmax(axis=1) == ref_pred[:m].argmax(axis=1)).mean()),
            accuracy_delta=None if acc is None or ref_m is None else acc - ref_m,
            max_prediction_diff=float(np.abs(pred - ref_pred[:m]).max()), samples=m, **kw)

    for target in targets:
        if target in forms.skipped:
            out.targets.append(forms.skipped[target])
        elif target == "numpy":
            out.targets.append(row("numpy", "is the reference (ideal schedule, float64)", ref_pred))
        elif target == "nir":
            pred = np.concatenate([sh.nir for sh in shards if sh.nir is not None])
            if not forms.nir_same:
                out.targets.append(row("nir", forms.nir_relation, pred, note=forms.nir_note))
                continue
            mismatches = sum(sh.nir_mismatches for sh in shards)
            total = sum(sh.nir_slots for sh in shards)
            ok = mismatches == 0
            note = (f"{forms.nir_note}; {mismatches} of {total} spikes differ" if not ok else
                    f"{forms.nir_note}; spike for spike equal ({total} spike slots)")
            out.targets.append(row("nir", forms.nir_relation, pred,
                                   status="ok" if ok else "failed", spike_mismatches=mismatches,
                                   spikes_compared=total, note=note))
        elif target == "loihi" and forms.fixed is not None:
            pred = np.concatenate([sh.fixed for sh in shards if sh.fixed is not None])
            out.targets.append(row("loihi", LOIHI_RELATION, pred,
                                   note=f"fixed-point reference simulator on all {n} samples "
                                        "(Lava itself: the lava row)"))
            out.targets.append(compare_lava(forms.fixed, x[:max(lava_limit, 0)], timesteps, row,
                                            n))
    return out


LOIHI_RELATION = "differs by design (fixed point, loihi schedule): accuracy delta"


def cannot_express_note(target: str, problems: list[str]) -> str:
    """The note of a row skipped because ``target`` cannot express the network."""
    return cannot_express_message(target, problems, one_line=True)


def no_target_could_run(notes: list[str]) -> BackendError:
    """The error (exit code 4) when every target asked for was skipped, with why."""
    return BackendError("no target could run: " + "; ".join(notes))


def _check_options(target: str, nir_reset: str, nir_pool: str) -> dict[str, Any]:
    return {"nir_reset": nir_reset, "nir_pool": nir_pool} if target == "nir" else {}


def preflight(ann: Graph, calib_x: np.ndarray, recipe: Recipe, targets: list[str],
              nir_reset: str = "zero", nir_pool: str = "sum",
              batch_size: int = 256) -> dict[str, list[str]]:
    """{target: what its ``check`` refuses in the SNN graph ``recipe`` makes of ``ann``}, found
    before calibration (``onnx2snn.convert.preflight``) with the checks the rows are skipped
    by after it. A backend that is not available here is left to the run, which says so."""
    outline = outline_snns(ann, calib_x, {"": recipe}, batch_size)[""]
    refused: dict[str, list[str]] = {}
    for target in dict.fromkeys(targets):
        try:
            backend = get_backend(target)
        except Onnx2SnnError:
            continue
        refused[target] = backend.check(outline, **_check_options(target, nir_reset, nir_pool))
    return refused


def _nir_form(snn: Graph, forms: _Forms, nir_reset: str, nir_pool: str, nir_dtype: Any,
              folder: Path) -> None:
    """The NIR file's graph as ``nir.read`` gives it back, and how it must relate to the
    reference (into ``forms``); a skipped row when NIR cannot express the network."""
    from onnx2snn.backends.nir import from_nir, write_nir

    problems = get_backend("nir").check(snn, **_check_options("nir", nir_reset, nir_pool))
    if problems:
        forms.skipped["nir"] = TargetResult("nir", "skipped", "-",
                                            note=cannot_express_note("nir", problems))
        return
    resets = {p.reset for p in snn.nodes if isinstance(p, IF)}
    forms.nir_same = resets <= {"subtract"} if nir_reset == "exact" else resets <= {"zero"}
    path = write_nir(snn, folder / "network.nir", reset=nir_reset, pool=nir_pool, dtype=nir_dtype)
    forms.nir = from_nir(path)
    by_ir = {ir: name for name, ir in forms.nir.meta["ir_names"].items()}  # the file's own names
    forms.nir_names = {p.name: by_ir[p.name] for p in snn.nodes if isinstance(p, IF)}
    dtype_name = np.dtype(nir_dtype).name
    if forms.nir_same:
        forms.nir_relation = f"must equal the reference spike for spike (NIR reset {nir_reset})"
        forms.nir_note = f"file arrays {dtype_name}"
    else:
        forms.nir_relation = (f"differs by design (NIR reset {nir_reset}, network reset "
                              f"{'/'.join(sorted(resets))}): accuracy delta")
        forms.nir_note = (f"file arrays {dtype_name}; use --nir-reset exact for a spike-for-spike "
                          "check")


def _loihi_form(snn: Graph, calib_x: np.ndarray, forms: _Forms) -> None:
    """The network quantized for Loihi 2 (into ``forms``), or a skipped row saying why not."""
    try:
        backend = get_backend("loihi")
        problems = backend.check(snn)
        if problems:
            forms.skipped["loihi"] = TargetResult("loihi", "skipped", LOIHI_RELATION,
                                                  note=cannot_express_note("loihi", problems))
            return
        forms.fixed = backend.quantize(snn, calib_x=calib_x)  # type: ignore[attr-defined]
    except Onnx2SnnError as e:
        forms.skipped["loihi"] = TargetResult(
            "loihi", "skipped", LOIHI_RELATION,
            note=f"the loihi target cannot quantize this network: {e}")


def compare_lava(q: Graph, x: np.ndarray, timesteps: int, row: Any, total: int) -> TargetResult:
    """Lava ``fixed_pt`` against ``simulate_fixed`` on the quantized graph ``q``: must be equal.

    Compared on ``x`` (the first samples): what every population sends at every step, the
    integer currents into every readout and the readouts' predictions at every step.
    """
    relation = "must equal the fixed-point simulator exactly (every message, every step)"
    m = len(x)
    if m == 0:
        return TargetResult("lava", "skipped", relation, samples=0,
                            note=f"Lava ran on 0 of {total} samples (--lava-limit 0)")
    try:
        from onnx2snn.backends.loihi.backend import import_lava

        import_lava()
        from onnx2snn.backends.loihi.network import LavaNetwork
    except ImportError as e:
        return TargetResult("lava", "skipped", relation, note=f"Lava cannot run here: {e}")
    pops = [p.name for p in q.nodes if isinstance(p, LoihiNeuron)]
    feeds = {o: q[o].inputs[0] for o in q.outputs}
    ref = simulate_fixed(q, x, timesteps, record=pops + list(feeds.values()))
    try:
        with warnings.catch_warnings():
            # networkx, in Lava's compiler, warns on every graph it builds that pandas is missing
            warnings.filterwarnings("ignore", message="pandas not found", category=ImportWarning)
            with LavaNetwork(q, timesteps, "fixed_pt") as net:
                got = net.run(x)
    except BackendError as e:
        return TargetResult("lava", "skipped", relation, note=f"Lava cannot run this network: {e}")
    # Lava's sink holds what a population sends at t; the reference what its synapses get at t+1
    pairs = [(got[p][:-1], ref.recorded[p][1:]) for p in pops]
    pairs += [(got[o], ref.recorded[f]) for o, f in feeds.items()]
    differ = sum(int((a != b).sum()) for a, b in pairs)
    slots = sum(int(b.size) for _, b in pairs)
    preds = {o: q[o].predict(got[o]) for o in feeds}  # type: ignore[attr-defined]
    pred_differ = sum(int((preds[o] != ref.predictions[o]).reshape(timesteps, m, -1).any(-1).sum())
                      for o in feeds)
    pred_slots = timesteps * m * len(feeds)
    ok = differ == 0 and pred_differ == 0
    head = f"Lava ran on {m} of {total} samples (--lava-limit)"
    note = (f"{head}; equal to the fixed-point simulator: {slots} messages and {pred_slots} "
            "predictions (every step)" if ok else
            f"{head}; {differ} of {slots} messages and {pred_differ} of {pred_slots} predictions "
            "(sample × step) differ from the fixed-point simulator")
    first = next(iter(feeds))
    pred = preds[first][timesteps - 1].reshape(m, -1)
    return row("lava", relation, pred, status="ok" if ok else "failed", spike_mismatches=differ,
               spikes_compared=slots, note=note)


__all__ = ["LAVA_LIMIT", "TARGETS", "CompareShard", "Comparison", "TargetResult",
           "cannot_express_note", "compare", "compare_lava", "compare_shard", "no_target_could_run",
           "preflight"]
