"""Sharded evaluation (``onnx2snn.parallel``): worker processes and a local Ray cluster give the
numbers of one process bit for bit; the merge; peak memory in ``evaluate --json``.

The digits CNN (convolutions, a max-pool gate, three populations) is converted once per module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.backends.numpy import simulate
from onnx2snn.cli.main import main
from onnx2snn.convert import convert
from onnx2snn.errors import BackendError
from onnx2snn.evaluate import Evaluation, evaluate_graph
from onnx2snn.ir import save_graph
from onnx2snn.parallel import ShardStats, merge_shards, run_shard, run_sharded, shard_bounds

MODELS = Path(__file__).resolve().parents[1] / "models"
CNN = MODELS / "digits_cnn.onnx"
N = 150  # 5 shards of 32 (the last one of 22): more shards than workers, an uneven tail
BATCH = 32
TS = [1, 4, 16]


@pytest.fixture(scope="module")
def cnn() -> tuple:
    calib = np.load(MODELS / "digits_calib.npz")["x"][:128].reshape(-1, 1, 8, 8)
    data = np.load(MODELS / "digits_test.npz")
    x = data["x"][:N].reshape(N, 1, 8, 8).astype(np.float32)
    return convert(CNN, calib).snn, x, data["y"][:N]


def table(ev: Evaluation) -> tuple:
    """Everything an evaluation measures (not where it ran or its memory)."""
    return ev.samples, ev.ann_accuracy, ev.rows, ev.layers, ev.notes


def test_shards_tile_the_data_set() -> None:
    assert shard_bounds(150, 32) == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 150)]
    assert shard_bounds(32, 32) == [(0, 32)]
    assert shard_bounds(0, 32) == []
    with pytest.raises(BackendError):
        shard_bounds(10, 0)


def test_one_process_equals_the_plain_simulation(cnn: tuple) -> None:
    graph, x, _ = cnn
    run = run_sharded(graph, x, TS, shard_size=BATCH, batch_size=BATCH)
    sim = simulate(graph, x, TS[-1], batch_size=BATCH)
    (pred,) = sim.predictions.values()
    assert np.array_equal(run.predictions, pred[[t - 1 for t in TS]])
    assert np.array_equal(run.totals.sops, sim.sops)
    assert all(np.array_equal(run.totals.spikes[k], sim.spikes[k]) for k in sim.spikes)
    assert (run.engine, run.workers, run.shards, run.worker_peak_rss) == ("this process", 1, 5, {})


@pytest.mark.slow
@pytest.mark.parametrize(("encoder", "threads"), [("direct", None), ("poisson", None),
                                                  ("direct", 1)])
def test_two_worker_processes_equal_one_process_bit_for_bit(cnn: tuple, encoder: str,
                                                            threads: int | None) -> None:
    """threads=1: this process runs a one-thread BLAS, fresh workers start with one per core
    (OpenBLAS rounds differently then); they must take this process's count."""
    from threadpoolctl import threadpool_limits

    graph, x, y = cnn
    ann = np.random.default_rng(0).normal(size=(N, 10))  # any reference: the error is compared
    kw = dict(ann_outputs=ann, batch_size=BATCH, encoder=encoder, seed=3)
    with threadpool_limits(limits=threads, user_api="blas"):
        one = evaluate_graph(graph, x, y, TS, **kw)
        two = evaluate_graph(graph, x, y, TS, workers=2, **kw)
    assert table(two) == table(one)  # float == float: the same bits
    assert one.rows[-1].accuracy > 0.5 and one.rows[-1].sops > 0
    assert two.execution == {"engine": "processes", "workers": 2, "shards": 5}
    assert len(two.worker_peak_rss_bytes) == 2 and min(two.worker_peak_rss_bytes.values()) > 0
    assert one.worker_peak_rss_bytes == {} and one.peak_rss_bytes > 0


@pytest.mark.slow
def test_a_nir_graph_in_worker_processes_equals_one_process(cnn: tuple, tmp_path: Path) -> None:
    """A graph read from NIR holds NIR node kinds: a worker decodes it after importing the nir
    backend, which registers them."""
    from onnx2snn.backends.nir import from_nir, write_nir

    graph, x, y = cnn
    nir_graph = from_nir(write_nir(graph, tmp_path / "cnn.nir"))
    one = evaluate_graph(nir_graph, x, y, TS, backend="nir", batch_size=BATCH)
    two = evaluate_graph(nir_graph, x, y, TS, backend="nir", batch_size=BATCH, workers=2)
    assert table(two) == table(one) and one.rows[-1].accuracy > 0.5


@pytest.mark.slow
def test_poisson_shards_get_the_spikes_of_the_whole_run(cnn: tuple) -> None:
    """Without the shard's first sample index, every shard would replay the first one's spikes."""
    graph, x, _ = cnn
    run = run_sharded(graph, x, [8], shard_size=BATCH, workers=2, batch_size=BATCH,
                      encoder="poisson", seed=5)
    sim = simulate(graph, x, 8, batch_size=BATCH, encoder="poisson", seed=5)
    (pred,) = sim.predictions.values()
    assert np.array_equal(run.predictions[0], pred[7])


def test_every_shard_runs_with_the_blas_threads_it_is_given(cnn: tuple) -> None:
    graph, x, _ = cnn
    shard = run_shard(graph, x[:8], 0, [2], "numpy", {}, threads=1)
    assert shard.blas.endswith(", 1 thread(s)") or shard.blas.startswith("no BLAS")


def _shard(start: int, n: int, sops: list[float], worker: str = "w:1") -> ShardStats:
    return ShardStats(start, np.full((1, n, 2), float(start)), {"p": np.array([1.0, 2.0])},
                      {"p": 4}, np.array(sops), worker, 1000 + start, "openblas x Haswell, 1")


def test_merge_adds_in_shard_order_whatever_order_shards_arrive() -> None:
    # 0.1 + 0.2 + 0.3 != 0.1 + (0.2 + 0.3) in floating point: the order is fixed by shard index
    shards = [_shard(0, 2, [0.1]), _shard(2, 1, [0.2]), _shard(3, 3, [0.3], "w:2")]
    merged = merge_shards(shards[::-1], [1], 6, engine="processes", workers=2)
    assert merged.totals.sops[0] == (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)
    assert merged.predictions[0, :, 0].tolist() == [0, 0, 2, 3, 3, 3]
    assert merged.totals.spikes["p"].tolist() == [3.0, 6.0]
    assert merged.worker_peak_rss == {"w:1": 1002, "w:2": 1003}
    assert merged.totals.firing_rate(2) == 9.0 / (4 * 6 * 2)


def test_merge_refuses_shards_that_do_not_tile_the_data() -> None:
    with pytest.raises(BackendError, match="starting at sample 2"):
        merge_shards([_shard(0, 2, [0.0]), _shard(3, 1, [0.0])], [1], 4, engine="x", workers=1)
    with pytest.raises(BackendError, match="cover 2 of 4"):
        merge_shards([_shard(0, 2, [0.0])], [1], 4, engine="x", workers=1)


def test_merge_notes_shards_that_ran_on_different_blas() -> None:
    a, b = _shard(0, 1, [0.0]), _shard(1, 1, [0.0])
    b.blas = "openblas x SkylakeX, 1"
    (note,) = merge_shards([a, b], [1], 2, engine="ray", workers=2).notes
    assert "Haswell" in note and "SkylakeX" in note


def test_lava_refuses_workers(cnn: tuple) -> None:
    graph, x, _ = cnn
    with pytest.raises(BackendError, match="runs in this process only"):
        run_sharded(graph, x, [4], backend="loihi", workers=2)


def test_ray_missing_says_how_to_install_it(cnn: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    graph, x, _ = cnn
    with pytest.raises(BackendError, match=r"pip install 'onnx2snn\[ray\]'"):
        run_sharded(graph, x, [4], engine="ray")


# -- Ray: a local cluster, started as CI would (the local_ray fixture, tests/conftest.py) --------


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_local_ray_cluster_equals_one_process_bit_for_bit(cnn: tuple, local_ray,
                                                          encoder: str) -> None:
    graph, x, y = cnn
    ann = np.random.default_rng(1).normal(size=(N, 10))
    kw = dict(ann_outputs=ann, batch_size=BATCH, encoder=encoder, seed=7)
    one = evaluate_graph(graph, x, y, TS, **kw)
    on_ray = evaluate_graph(graph, x, y, TS, parallel="ray", workers=2, **kw)
    assert table(on_ray) == table(one)
    assert on_ray.execution == {"engine": "ray", "workers": 2, "shards": 5}
    assert on_ray.worker_peak_rss_bytes and min(on_ray.worker_peak_rss_bytes.values()) > 0
    assert local_ray.is_initialized()  # the program's own session is left running


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory, cnn: tuple) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("par")
    graph, x, y = cnn
    save_graph(graph, folder / "cnn.snn")
    np.savez(folder / "test.npz", x=x, y=y)
    return folder / "cnn.snn", folder / "test.npz"


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_cli_workers_json_equals_one_process_and_reports_memory(converted: tuple) -> None:
    snn, data = converted
    base = ["evaluate", snn, "--data", data, "-T", "2,8", "--batch-size", "40", "--json"]
    one, two = invoke(*base), invoke(*base, "--workers", "2")
    assert one.exit_code == 0 and two.exit_code == 0, (one.stderr, two.stderr)
    d1, d2 = json.loads(one.stdout), json.loads(two.stdout)
    assert (d2["results"], d2["layers"]) == (d1["results"], d1["layers"])
    assert d1["peak_rss_bytes"] > 10 * 2**20 and d1["worker_peak_rss_bytes"] == {}
    assert len(d2["worker_peak_rss_bytes"]) == 2
    assert all(v > 10 * 2**20 for v in d2["worker_peak_rss_bytes"].values())
    assert d2["execution"] == {"engine": "processes", "workers": 2, "shards": 4}


@pytest.mark.slow
def test_cli_summary_prints_peak_memory_of_each_process(converted: tuple) -> None:
    snn, data = converted
    r = invoke("evaluate", snn, "--data", data, "-T", "4", "--batch-size", "50", "-q",
               "--workers", "3")
    assert r.exit_code == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("3 shard(s) on 3 worker process(es); peak memory (RSS): ")
    assert "MB this process" in last and "the largest of 3 worker(s)" in last


def test_cli_lava_with_workers_is_one_error_line(converted: tuple) -> None:
    snn, data = converted
    r = invoke("evaluate", snn, "--data", data, "-T", "4", "--backend", "lava", "--workers", "2")
    assert r.exit_code == 4, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs in this process only" in lines[0], r.stderr


def test_cli_workers_must_be_positive(converted: tuple) -> None:
    snn, data = converted
    r = invoke("evaluate", snn, "--data", data, "--workers", "0")
    assert r.exit_code == 2 and "--workers" in r.stderr


@pytest.mark.slow
def test_cli_ray_address_runs_on_that_cluster(converted: tuple, local_ray) -> None:
    """Another program (a CLI in a subprocess) joins the cluster this test process started, as a
    user joins a running cluster with --ray-address; its table equals one process's."""
    snn, data = converted
    base = [sys.executable, "-m", "onnx2snn", "evaluate", str(snn), "--data", str(data),
            "-T", "2,8", "--batch-size", "40", "--json"]
    address = local_ray.get_runtime_context().gcs_address
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            for cmd in (base, base + ["--ray-address", address])]
    for r in runs:
        assert r.returncode == 0, r.stderr
    one, on_ray = (json.loads(r.stdout) for r in runs)
    assert (on_ray["results"], on_ray["layers"]) == (one["results"], one["layers"])
    assert on_ray["execution"]["engine"] == "ray" and on_ray["worker_peak_rss_bytes"]
    assert local_ray.is_initialized()  # the cluster outlives the program that joined it


def test_cli_unreachable_ray_address_fails_fast(converted: tuple) -> None:
    snn, data = converted
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    # in a fresh process: this one may hold a Ray session, which evaluate would use instead
    r = subprocess.run([sys.executable, "-m", "onnx2snn", "evaluate", str(snn), "--data",
                        str(data), "-T", "4", "--ray-address", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "cannot reach the Ray cluster" in r.stderr, r.stderr
    assert time.monotonic() - t < 60  # Ray alone retries for minutes


# -- Ctrl-C / SIGTERM with workers ---------------------------------------------------------------
def _child_pids(pid: int) -> set[int]:
    """Direct children of ``pid`` (Linux: /proc/PID/task/*/children)."""
    found: set[int] = set()
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.update(int(p) for p in f.read_text().split())
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_workers_stops_them_all(converted: tuple, signum: int, code: int,
                                              tmp_path: Path) -> None:
    """The signal goes to the whole process group, as a terminal sends Ctrl-C, once a shard is
    through: exit 130/143 within seconds, one line on stderr, nothing on stdout, no worker left."""
    snn, data = converted
    cmd = [sys.executable, "-m", "onnx2snn", "evaluate", str(snn), "--data", str(data),
           "-T", "32768",  # large: the run must be far from over when the signal comes
           "--batch-size", "10", "--workers", "2"]
    log = tmp_path / "stderr.txt"  # the progress bar goes here; polled below
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not re.search(rb" [1-9]\d*/150", log.read_bytes()):  # a shard is through
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "no shard came back"
            time.sleep(0.1)
        workers = _child_pids(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
        os.killpg(proc.pid, signum)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = log.read_text(errors="replace")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    lines = [s.strip() for s in stderr.replace("\r", "\n").splitlines() if s.strip()]
    assert lines[-1] == "onnx2snn: interrupted", stderr
    assert out == b""
    end = time.monotonic() + 10
    while [p for p in workers if _running(p)] and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in workers if _running(p)], "worker processes outlived the command"


def test_peak_rss_of_a_spawned_process_is_its_own() -> None:
    """A child started by fork + exec reports its own peak, not what its parent held: Linux
    carries ``ru_maxrss`` over an exec, so with it a worker of a parent holding 400 MB said
    400 MB."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the carried-over ru_maxrss is Linux's")
    held = np.ones(50 * 2**20)  # 400 MiB in this process, resident
    code = "from onnx2snn.parallel import peak_rss; print(peak_rss())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)
    assert held.sum() > 0
    assert 0 < child < 300 * 2**20
