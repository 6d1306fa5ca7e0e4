"""``compare --workers N`` / ``--parallel ray``: the comparison of worker processes and of a local
Ray cluster equals that of one process bit for bit (every figure of every row, spike counts
included); a shard runs the forms exactly as one simulation of all samples does.

The digits CNN on 100 test samples in shards of 32 (4 shards, the last one of 4 samples).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.backends.numpy.simulator import simulate
from onnx2snn.cli.main import main
from onnx2snn.compare import compare, compare_shard
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import BackendError

MODELS = Path(__file__).resolve().parents[1] / "models"
CNN = MODELS / "digits_cnn.onnx"
N, BATCH, T = 100, 32, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    calib = np.load(MODELS / "digits_calib.npz")["x"][:128].reshape(-1, 1, 8, 8)
    test = np.load(MODELS / "digits_test.npz")
    return calib, test["x"][:N].reshape(N, 1, 8, 8).astype(np.float32), test["y"][:N]


def run(data: tuple, targets: list[str], **kw: object) -> dict:
    calib, x, y = data
    return compare(CNN, calib, x, y, targets, T, batch_size=BATCH, lava_limit=0,
                   **kw).to_dict()  # type: ignore[arg-type]


def test_a_shard_is_the_simulation_of_all_samples(data: tuple) -> None:
    calib, x, _ = data
    snn = convert(CNN, calib, Recipe(reset="zero")).snn
    from onnx2snn.backends.loihi.backend import LoihiBackend

    q = LoihiBackend().quantize(snn, calib_x=calib)
    whole = simulate(snn, x, T, dtype=np.float64)
    fixed = simulate_fixed(q, x, T)
    shards = [compare_shard(snn, None, {}, q, T, BATCH, x[a:a + BATCH], a)
              for a in range(0, N, BATCH)]
    ref = np.concatenate([s.reference for s in shards])
    fix = np.concatenate([s.fixed for s in shards if s.fixed is not None])
    np.testing.assert_array_equal(ref, whole.predictions[snn.outputs[0]][T - 1].reshape(N, -1))
    np.testing.assert_array_equal(fix, fixed.predictions[q.outputs[0]][T - 1].reshape(N, -1))


@pytest.mark.slow
@pytest.mark.parametrize("nir_reset", ["exact", "zero"])
def test_two_worker_processes_equal_one_process_bit_for_bit(data: tuple, nir_reset: str) -> None:
    one = run(data, ["numpy", "nir", "loihi"], nir_reset=nir_reset)
    two = run(data, ["numpy", "nir", "loihi"], nir_reset=nir_reset, workers=2)
    assert two == one
    rows = {r["target"]: r for r in one["targets"]}
    assert rows["loihi"]["status"] == "ok" and rows["loihi"]["samples"] == N
    if nir_reset == "exact":  # spikes were compared, in every shard
        assert rows["nir"]["spikes_compared"] > 0 and rows["nir"]["spike_mismatches"] == 0


@pytest.mark.slow
def test_local_ray_cluster_equals_one_process_bit_for_bit(data: tuple, local_ray) -> None:
    one = run(data, ["numpy", "nir"], nir_reset="exact")
    on_ray = run(data, ["numpy", "nir"], nir_reset="exact", parallel="ray", workers=2)
    assert on_ray == one
    assert local_ray.is_initialized()  # the program's own session is left running


def test_unknown_engine_and_zero_workers_are_refused(data: tuple) -> None:
    with pytest.raises(BackendError, match="unknown parallel engine"):
        run(data, ["numpy"], parallel="dask")
    with pytest.raises(BackendError, match="workers must be at least 1"):
        run(data, ["numpy"], workers=0)


def invoke(*extra: str):
    args = ["compare", str(CNN), "--targets", "numpy,nir", "--calib",
            str(MODELS / "digits_calib.npz"), "--data", str(MODELS / "digits_test.npz"),
            "--limit", str(N), "--batch-size", str(BATCH), "-T", str(T), "--nir-reset", "exact",
            *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.slow
def test_cli_workers_json_equals_one_process(data: tuple) -> None:
    one, two = invoke("--json"), invoke("--json", "--workers", "2")
    assert one.exit_code == 0 and two.exit_code == 0, (one.stderr, two.stderr)
    assert json.loads(two.stdout) == json.loads(one.stdout)


def test_cli_workers_must_be_positive() -> None:
    r = invoke("--workers", "0")
    assert r.exit_code == 2 and "--workers" in r.stderr
