"""Sharded simulation for ``evaluate``: in this process, in worker processes, or on a Ray cluster.

The data set is cut into consecutive shards of ``shard_size`` samples (the simulation's batch size),
fixed by the data set alone, never by the number of workers. Each shard is one ``Backend.run`` call
on its slice, told the index of its first sample (Poisson spikes are seeded per sample index). A
shard returns exact per-sample quantities (the readout's prediction after each asked T) and per-step
sums (spikes per population, synaptic operations). The merge, once, in the calling process,
concatenates the per-sample arrays in sample order and adds the per-step sums in shard order:

    spikes_l[t] = Σ_shards spikes_l,shard[t]    (integers, added in float64: exact)
    sops[t]     = (…((sops_0[t] + sops_1[t]) + sops_2[t]) …)    (the same additions every time)

One process (``workers=1``), ``workers=N`` and Ray run the same shards through the same merge, so
their numbers are equal bit for bit. Peak resident memory is reported per process: this one, and
every worker that ran a shard.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx2snn.backends import get_backend
from onnx2snn.backends.numpy.simulator import SimResult, sops_from_events
from onnx2snn.blas import QUIET_TIMEOUT, TIMEOUT_ENV
from onnx2snn.errors import BackendError, Onnx2SnnError
from onnx2snn.ir.graph import Graph
from onnx2snn.ir.serialize import graph_from_bytes, graph_to_bytes
from onnx2snn.progress import progress_bar

# Backends that run the reference simulator: no process-global state, Poisson seeds follow the
# sample index. Lava (loihi) spawns its own processes and forces the fork start method: it runs in
# this process, as one shard.
SHARDABLE_BACKENDS = ("numpy", "nir")
ENGINES = ("processes", "ray")
DEFAULT_SHARD_SIZE = 256  # samples per shard when no batch size is given


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (0 where the OS does not say).

    On Linux this is ``VmHWM`` of /proc/self/status, the peak of this program's own memory.
    ``getrusage``'s ``ru_maxrss`` is not: Linux carries it over an exec, so a worker that a
    parent forked and exec'd (multiprocessing's spawn, subprocess) reports at least what the
    parent held when it forked (measured: 2075 MB in a child of a parent holding 2 GiB, whose
    own peak was 13.5 MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0
    kib_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib_or_bytes) if sys.platform == "darwin" else int(kib_or_bytes) * 1024


def blas_setup() -> tuple[str, int | None]:
    """(``library version architecture``, threads) of the BLAS NumPy calls, as threadpoolctl sees it.

    OpenBLAS's matrix products round differently with a different number of threads (measured:
    1 against 2 threads changes the spikes of the digits CNN) and on a CPU of another kernel
    architecture, so every shard runs with this process's thread count and reports its setup.
    """
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        return "no BLAS found", None
    i = blas[0]
    return (" ".join(str(i.get(k)) for k in ("internal_api", "version", "architecture")),
            int(i["num_threads"]))


def process_id() -> str:
    """``host:pid`` of this process: names a worker in the memory report."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ShardStats:
    """What the shard of samples [start, start + n) yields.

    * ``predictions``: (len(timesteps), n, *out) the first output's readout after each asked t;
    * ``spikes``: {population: (T,)} spikes per step, summed over the shard's samples and neurons;
    * ``neurons``: {population: number of neurons};  ``sops``: (T,) synaptic operations per step;
    * ``worker``, ``peak_rss``: the process that ran it (``host:pid``) and its peak RSS in bytes;
    * ``blas``: that process's BLAS (library, version, kernel architecture; ``blas_setup``);
    * ``events``, ``fan``: the simulator's integer events per source and step and each source's
      fan-out; when present the merged SOPs follow from the summed events (``sops_from_events``),
      with the bits of one process however it cut its batches.
    """

    start: int
    predictions: np.ndarray
    spikes: dict[str, np.ndarray]
    neurons: dict[str, int]
    sops: np.ndarray
    worker: str
    peak_rss: int
    blas: str = ""
    events: dict[str, np.ndarray] = field(default_factory=dict)
    fan: dict[str, float] = field(default_factory=dict)


@dataclass
class ShardedRun:
    """The merged shards: ``totals`` is the whole run's ``SimResult`` without per-step predictions
    (its ``firing_rate`` and ``sops_per_sample`` apply), ``predictions`` (len(timesteps), N, *out)
    the readout after each asked t."""

    timesteps: list[int]
    predictions: np.ndarray
    totals: SimResult
    shards: int
    engine: str
    workers: int
    worker_peak_rss: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def shard_bounds(n: int, shard_size: int | None) -> list[tuple[int, int]]:
    """[start, stop) of each shard: consecutive slices of ``shard_size`` samples (the last shorter;
    None: ``DEFAULT_SHARD_SIZE``)."""
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    if shard_size < 1:
        raise BackendError(f"the shard (batch) size must be at least 1, not {shard_size}")
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def run_shard(graph: Graph, x: np.ndarray, start: int, timesteps: list[int], backend: str,
              options: dict[str, Any], progress: Callable[[int], None] | None = None,
              threads: int | None = None) -> ShardStats:
    """Run ``backend`` on the shard ``x`` (whose first sample has index ``start`` in the data set)
    to max(timesteps) and keep what the evaluation needs; ``threads``: BLAS threads to use (those
    of the process that asked for the shard), None to leave them."""
    from threadpoolctl import threadpool_limits

    opts = dict(options, first_sample=start) if backend in SHARDABLE_BACKENDS else dict(options)
    with threadpool_limits(limits=threads, user_api="blas"):
        result = get_backend(backend).run(graph, x, timesteps[-1], progress=progress, **opts)
        blas = blas_setup()
    pred = result.predictions[graph.outputs[0]]
    picked = np.ascontiguousarray(pred[[t - 1 for t in timesteps]])
    return ShardStats(start, picked, dict(result.spikes), dict(result.neurons),
                      np.asarray(result.sops), process_id(), peak_rss(),
                      f"{blas[0]}, {blas[1]} thread(s)", dict(getattr(result, "events", {})),
                      dict(getattr(result, "fan", {})))


def _sum_in_order(arrays: list[np.ndarray]) -> np.ndarray:
    """a0 + a1 + a2 + … in float64, left to right: the same additions whatever ran the shards."""
    total = np.array(arrays[0], dtype=np.float64)
    for a in arrays[1:]:
        total = total + np.asarray(a, dtype=np.float64)
    return total


def merge_shards(shards: list[ShardStats], timesteps: list[int], samples: int, *, engine: str,
                 workers: int) -> ShardedRun:
    """Concatenate the shards' predictions in sample order and add their per-step sums in shard
    order (see the module doc). ``shards`` may come in any order; together they must cover
    [0, samples) once."""
    shards = sorted(shards, key=lambda s: s.start)
    covered = 0
    for s in shards:
        if s.start != covered:
            raise BackendError(f"shards do not tile the data set: expected one starting at sample "
                               f"{covered}, got {s.start} (a bug: please report it)")
        covered += s.predictions.shape[1]
    if covered != samples:
        raise BackendError(f"shards cover {covered} of {samples} samples (a bug: please report it)")
    first = shards[0]
    if first.events and all(s.events.keys() == first.events.keys() == s.fan.keys()
                            for s in shards):
        events = {k: _sum_in_order([s.events[k] for s in shards]) for k in first.events}
        sops = sops_from_events(events, first.fan, first.sops.shape[0])
    else:  # a backend without event counts: per-step sums in shard order
        sops = _sum_in_order([s.sops for s in shards])
    totals = SimResult(
        first.sops.shape[0], samples, {},
        {k: _sum_in_order([s.spikes[k] for s in shards]) for k in first.spikes},
        first.neurons, sops)
    me = process_id()
    peaks: dict[str, int] = {}
    for s in shards:
        if s.worker != me:
            peaks[s.worker] = max(peaks.get(s.worker, 0), s.peak_rss)
    setups = sorted({s.blas for s in shards})
    notes = [] if len(setups) < 2 else [
        "the shards ran on different BLAS setups (" + "; ".join(setups) + "): the numbers may "
        "differ in the last bits from a run on one of them"]
    return ShardedRun(timesteps, np.concatenate([s.predictions for s in shards], axis=1), totals,
                      len(shards), engine, workers, peaks, notes)


# -- running shards: in this process, in worker processes, on Ray ---------------------------------
# A shard task is a module-level function task(*shared, x, start, threads) -> result: ``shared``
# (bytes of graphs, options) goes to each worker once, each shard's inputs ``x`` (whose first
# sample has index ``start`` in the data set) with its task; ``threads`` is the BLAS thread count
# of the calling process (``blas_setup``), which every worker uses.
_WORKER_STATE: dict[str, Any] = {}
_GRAPHS: dict[str, Graph] = {}  # sha256 of the graph's bytes -> the decoded graph


def graph_in_worker(data: bytes, backend: str) -> Graph:
    """The graph a worker was sent as ``graph_to_bytes`` (an IR graph does not pickle: its meta is
    a read-only mapping), decoded once per process. The backend is imported first: it registers
    its own node kinds (NIR neurons, Loihi's fixed-point nodes) that decoding looks up."""
    key = hashlib.sha256(data).hexdigest()
    if key not in _GRAPHS:
        get_backend(backend)
        if len(_GRAPHS) > 8:
            _GRAPHS.clear()
        _GRAPHS[key] = graph_from_bytes(data, "<graph sent to a worker>")
    return _GRAPHS[key]


def run_shard_of_bytes(graph: bytes, timesteps: list[int], backend: str, options: dict[str, Any],
                       x: np.ndarray, start: int, threads: int | None) -> ShardStats:
    """``run_shard`` in a worker process, given the graph as ``graph_to_bytes``."""
    return run_shard(graph_in_worker(graph, backend), x, start, timesteps, backend, options,
                     threads=threads)


def _init_worker(task: Callable[..., Any], shared: tuple[Any, ...], threads: int | None) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and ends the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STATE.update(task=task, shared=shared, threads=threads)


def _worker_shard(job: tuple[int, np.ndarray]) -> tuple[int, Any]:
    start, x = job
    s = _WORKER_STATE
    return start, s["task"](*s["shared"], x, start, s["threads"])


def _run_in_processes(task: Callable[..., Any], shared: tuple[Any, ...], x: np.ndarray,
                      bounds: list[tuple[int, int]], workers: int,
                      update: Callable[[int], None]) -> list[Any]:
    # spawn, not fork: the parent may hold threads (onnxruntime, tqdm) and Lava sets fork globally
    ctx = multiprocessing.get_context("spawn")
    size = {a: b - a for a, b in bounds}
    results = []
    # leaving the pool (done, an error, Ctrl-C, SIGTERM) terminates the workers
    with ctx.Pool(workers, initializer=_init_worker,
                  initargs=(task, shared, blas_setup()[1])) as pool:
        jobs = ((a, x[a:b]) for a, b in bounds)
        for start, result in pool.imap_unordered(_worker_shard, jobs):
            results.append(result)
            update(size[start])
    return results


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A ``[ray://]host:port`` address must accept a TCP connection: Ray itself retries an
    unreachable one for minutes before it fails. ``auto`` and other forms are left to Ray."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BackendError(f"cannot reach the Ray cluster at {address} ({e}); start it with "
                           f"`ray start --head` there, or check --ray-address") from None


def _run_on_ray(task: Callable[..., Any], shared: tuple[Any, ...], x: np.ndarray,
                bounds: list[tuple[int, int]], workers: int, address: str | None,
                update: Callable[[int], None]) -> list[Any]:
    """One Ray task per shard. Uses the Ray session this program already opened if there is one;
    else connects to ``address``; else starts a local cluster of ``workers`` CPUs (and stops it)."""
    try:
        import ray
    except ImportError:
        raise BackendError("--parallel ray needs Ray, an optional dependency: "
                           "pip install 'onnx2snn[ray]'") from None
    started = not ray.is_initialized()
    if started and address:
        _check_reachable(address)
    if started:
        quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                                 # the workers' OpenBLAS threads sleep when idle (onnx2snn.blas)
                                 "runtime_env": {"env_vars": {TIMEOUT_ENV: os.environ.get(
                                     TIMEOUT_ENV, str(QUIET_TIMEOUT))}}}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(f"cannot start or reach the Ray cluster"
                               f"{f' at {address}' if address else ''}: {e}") from None
    try:
        remote = ray.remote(num_cpus=1)(task)
        refs = [ray.put(item) if isinstance(item, bytes) else item for item in shared]
        threads = blas_setup()[1]
        pending = {remote.remote(*refs, x[a:b], a, threads): b - a for a, b in bounds}
        results = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, Onnx2SnnError):
                    raise cause from None
                raise
            results.append(result)
            update(pending.pop(done[0]))
        return results
    finally:
        if started:
            ray.shutdown()


def check_engine(engine: str, workers: int, backend: str) -> None:
    """Refuse an unknown engine, fewer than one worker, or workers for a backend that runs in this
    process only (Lava)."""
    if engine not in ENGINES:
        raise BackendError(f"unknown parallel engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workers < 1:
        raise BackendError(f"workers must be at least 1, not {workers}")
    if backend not in SHARDABLE_BACKENDS and (workers > 1 or engine == "ray"):
        raise BackendError(f"the {backend} backend runs in this process only (Lava starts its own "
                           f"processes): drop --workers/--parallel/--ray-address, or evaluate with "
                           f"--backend {' or '.join(SHARDABLE_BACKENDS)}")


def run_shards(local: Callable[[np.ndarray, int, Callable[[int], None]], Any],
               task: Callable[..., Any], shared: tuple[Any, ...], x: np.ndarray,
               bounds: list[tuple[int, int]], *, workers: int = 1, engine: str = "processes",
               ray_address: str | None = None, desc: str = "simulating",
               show_progress: bool = False) -> tuple[list[Any], str, int]:
    """Run every shard [a, b) of ``x`` and return (results in any order, engine, workers).

    In this process (``workers`` 1, engine ``processes``) each shard is ``local(x[a:b], a,
    progress)``; otherwise ``task(*shared, x[a:b], a, threads)`` in ``workers`` spawned processes
    or as Ray tasks (``ray_address``, or a local cluster of ``workers`` CPUs). ``task`` must be
    a module-level function (workers import it); the progress bar advances by each finished
    shard's samples (by sample within a shard in this process).
    """
    workers = min(workers, len(bounds)) if engine == "processes" else workers
    where = "Ray" if engine == "ray" else f"{workers} processes" if workers > 1 else ""
    with progress_bar(len(x), f"{desc}{', ' + where if where else ''}", show_progress) as update:
        if engine == "ray":
            results = _run_on_ray(task, shared, x, bounds, workers, ray_address, update)
        elif workers > 1:
            results = _run_in_processes(task, shared, x, bounds, workers, update)
        else:
            results = [local(x[a:b], a, update) for a, b in bounds]
    return results, engine if workers > 1 or engine == "ray" else "this process", workers


def run_sharded(graph: Graph, x: np.ndarray, timesteps: list[int], *, backend: str = "numpy",
                shard_size: int | None = DEFAULT_SHARD_SIZE, workers: int = 1,
                engine: str = "processes", ray_address: str | None = None,
                show_progress: bool = False, **options: Any) -> ShardedRun:
    """Simulate ``graph`` on ``x`` to max(timesteps) shard by shard and merge (see the module doc).

    ``engine`` is ``processes`` (``workers`` processes on this machine; 1 runs in this process) or
    ``ray`` (a Ray cluster: ``ray_address``, or a local one of ``workers`` CPUs). ``options`` go to
    the backend's ``run``.
    """
    ts = sorted({int(t) for t in timesteps})
    check_engine(engine, workers, backend)
    bounds = shard_bounds(len(x), shard_size) if backend in SHARDABLE_BACKENDS else [(0, len(x))]
    if not bounds:
        raise BackendError("no inputs to run")

    def local(xs: np.ndarray, start: int, update: Callable[[int], None]) -> ShardStats:
        return run_shard(graph, xs, start, ts, backend, options, progress=update)

    shards, engine, workers = run_shards(
        local, run_shard_of_bytes, (graph_to_bytes(graph), ts, backend, options), x, bounds,
        workers=workers, engine=engine, ray_address=ray_address,
        desc=f"simulating ({backend}, T={ts[-1]})", show_progress=show_progress)
    return merge_shards(shards, ts, len(x), engine=engine, workers=workers)


__all__ = ["DEFAULT_SHARD_SIZE", "ENGINES", "SHARDABLE_BACKENDS", "ShardStats", "ShardedRun",
           "check_engine", "graph_in_worker", "merge_shards", "peak_rss", "run_shard",
           "run_sharded", "run_shards", "shard_bounds"]
