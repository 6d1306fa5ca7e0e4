"""Streaming simulation: cutting a run into batches and chunks of steps changes no bit of it.

The reference is the same simulator run in one piece (one batch, all T steps at once). With the
default onnxruntime synapse kernels every sample gets the same bits whatever the cut, so the
comparisons are exact (``array_equal``), for every schedule, encoder, record and the
fixed-point Loihi path. The memory plan and its budget are tested on their own, and peak memory
(tracemalloc sees NumPy's buffers) is shown not to grow with T.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from onnx2snn.backends.numpy import simulate
from onnx2snn.backends.numpy.fixed_point import simulate_fixed
from onnx2snn.backends.numpy.kernels import synapse_kernels
from onnx2snn.backends.numpy.memory import (
    CACHE_TARGET,
    MIN_BATCH,
    Footprint,
    footprint,
    parse_memory,
    plan,
)
from onnx2snn.backends.numpy.simulator import POPULATION_RUNNERS, streams_over_time
from onnx2snn.convert import Recipe, convert
from onnx2snn.errors import BackendError
from onnx2snn.ir import IF
from onnx2snn.quantize import quantize_for_loihi

MODELS = Path(__file__).resolve().parents[1] / "models"
X = np.load(MODELS / "digits_test.npz")["x"][:24]
CALIB = np.load(MODELS / "digits_calib.npz")["x"][:64]
CUTS = [(1, 5), (5, None), (7, 11)]  # (chunk of steps, batch size)


@pytest.fixture(scope="module")
def snns() -> dict[str, object]:
    """Converted digits CNN (avg pool) and ResNet (max-pool gate, residual Add)."""
    return {m: convert(MODELS / f"{m}.onnx", CALIB, Recipe()).snn
            for m in ("digits_cnn", "digits_resnet")}


def assert_same(a, b) -> None:
    assert a.predictions.keys() == b.predictions.keys()
    for k in a.predictions:
        np.testing.assert_array_equal(a.predictions[k], b.predictions[k])
    for k in a.spikes:
        np.testing.assert_array_equal(a.spikes[k], b.spikes[k])
    for k in a.recorded:
        np.testing.assert_array_equal(a.recorded[k], b.recorded[k])
    np.testing.assert_array_equal(a.sops, b.sops)  # from exact event counts: same bits
    for k in a.events:
        np.testing.assert_array_equal(a.events[k], b.events[k])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits_cnn", "digits_resnet"])
@pytest.mark.parametrize("schedule", ["ideal", "loihi"])
@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_cuts_change_nothing(snns, model: str, schedule: str, encoder: str) -> None:
    snn = snns[model]
    pops = [n.name for n in snn.nodes if isinstance(n, IF)][:2]
    opts = dict(schedule=schedule, encoder=encoder, seed=4, record=pops)
    whole = simulate(snn, X, 13, chunk=13, **opts)
    assert whole.plan is not None and whole.plan.chunk == 13 and whole.plan.batch == len(X)
    for chunk, batch in CUTS:
        part = simulate(snn, X, 13, chunk=chunk, batch_size=batch, **opts)
        assert part.plan is not None and part.plan.chunk <= chunk
        assert_same(whole, part)


@pytest.mark.slow
@pytest.mark.parametrize("neuron", ["lif", "if-subtract", "sdnn"])
def test_fixed_point_cuts_change_nothing(snns, neuron: str) -> None:
    q = quantize_for_loihi(snns["digits_cnn"], neuron, calib_x=CALIB).graph
    pops = [n.name for n in q.nodes if type(n) in POPULATION_RUNNERS]
    whole = simulate_fixed(q, X, 12, record=pops)
    for chunk, batch in CUTS:
        assert_same(whole, simulate_fixed(q, X, 12, record=pops, chunk=chunk, batch_size=batch))


def test_numpy_and_onnxruntime_kernels_agree_to_rounding(snns) -> None:
    snn = snns["digits_cnn"]
    ops = synapse_kernels(snn, np.float32)
    assert ops, "no synapse layer runs in onnxruntime"
    for name, op in ops.items():
        node = snn[name]
        (shape,) = snn.input_shapes(node)
        x = (np.random.default_rng(0).random((9,) + tuple(shape)) < 0.3).astype(np.float32)
        np.testing.assert_allclose(op(x), node.forward(x), rtol=1e-5, atol=1e-5)
    a = simulate(snn, X, 16, kernels="numpy").predictions
    b = simulate(snn, X, 16, kernels="onnxruntime").predictions
    for k in a:  # a spike may flip where v lands within rounding of θ: compare the decisions
        assert (a[k][-1].argmax(-1) == b[k][-1].argmax(-1)).mean() >= 0.95
    with pytest.raises(BackendError, match="unknown kernels"):
        simulate(snn, X, 4, kernels="cuda")


def test_memory_does_not_grow_with_timesteps(snns) -> None:
    snn = snns["digits_cnn"]
    x = np.repeat(X, 4, axis=0)
    peaks = []
    for t in (8, 64):
        tracemalloc.start()
        r = simulate(snn, x, t, chunk=4)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert r.plan is not None and r.plan.chunk == 4
    # the readout's (T, B, 10) currents and predictions grow with T; everything else does not
    kept = 64 * len(x) * 10 * (4 + 8) * 2
    assert peaks[1] < peaks[0] + kept, peaks


def test_plan_fits_the_budget() -> None:
    fp = Footprint(work=1000, state=500, kept=10, fixed=10_000)
    p = plan(fp, samples=1000, timesteps=100, budget=10_000 + 200 * (500 + 1000 + 1000 * 10))
    assert p.estimate <= p.budget and p.batch < 1000
    assert fp.bytes(p.batch, p.chunk, 100) == p.estimate
    big = plan(fp, samples=10, timesteps=100, budget=10**12)
    assert (big.batch, big.chunk) == (10, 100)
    capped = plan(fp, samples=10, timesteps=100, budget=10**12, batch_size=4, max_chunk=30)
    assert (capped.batch, capped.chunk) == (4, 25)  # even cuts: 3 batches of ≤ 4, 4 chunks of 25
    with pytest.raises(BackendError, match="too small.*--memory"):
        plan(fp, samples=10, timesteps=100, budget=10_000 + 100)


def test_cache_target_shrinks_the_chunk_then_the_batch() -> None:
    fp = Footprint(work=1000, state=0, kept=0, fixed=0)
    assert (lambda p: (p.batch, p.chunk))(plan(fp, 10, 100, budget=10**12, target=50_000)) \
        == (10, 5)  # 10 samples · 5 steps · 1000 bytes
    p = plan(fp, 1000, 100, budget=10**12, target=50_000)
    assert (p.batch, p.chunk) == (50, 1)
    p = plan(fp, 1000, 100, budget=10**12, target=1)
    assert (p.batch, p.chunk) == (MIN_BATCH, 1)
    p = plan(fp, 1000, 100, budget=10**12)  # no target: the largest cut that fits
    assert (p.batch, p.chunk) == (1000, 100)


def test_default_cut_aims_at_the_cache_target(snns) -> None:
    snn = snns["digits_cnn"]
    x = np.repeat(X, 30, axis=0)
    fp = footprint(snn, 4, POPULATION_RUNNERS)
    r = simulate(snn, x, 8)
    assert r.plan is not None and r.plan.chunk < 8
    assert r.plan.batch * r.plan.chunk * fp.work <= CACHE_TARGET
    assert_same(simulate(snn, x, 8, chunk=8), r)  # in one piece: the same bits


def test_budget_sets_the_cut(snns) -> None:
    snn = snns["digits_cnn"]
    fp = footprint(snn, 4, POPULATION_RUNNERS)
    budget = fp.fixed + len(X) * (fp.state + 32 * fp.kept + 3 * fp.work)
    r = simulate(snn, X, 32, memory=budget)
    assert r.plan is not None and r.plan.batch == len(X) and r.plan.chunk == 3
    assert r.plan.estimate <= budget
    assert_same(simulate(snn, X, 32), r)
    with pytest.raises(BackendError, match="memory budget"):
        simulate(snn, X, 32, memory=fp.fixed // 2)


@pytest.mark.parametrize(("text", "value"), [("4GB", 4 * 10**9), ("4 GiB", 4 * 2**30),
                                             ("512MiB", 512 * 2**20), ("1e9", 10**9),
                                             (12345, 12345), ("1.5kb", 1500)])
def test_parse_memory(text: str | int, value: int) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["4 bananas", "", "-1GB", "0"])
def test_parse_memory_refuses(text: str) -> None:
    with pytest.raises(BackendError, match="memory budget"):
        parse_memory(text)


def test_runner_without_state_runs_all_steps_at_once(snns, monkeypatch) -> None:
    snn = snns["digits_cnn"]
    real = POPULATION_RUNNERS[IF]

    def legacy(node, current, timesteps, strict, dtype):
        return real(node, current, timesteps, strict, dtype)

    monkeypatch.setitem(POPULATION_RUNNERS, IF, legacy)
    assert not streams_over_time(snn)
    r = simulate(snn, X, 10, chunk=3)
    assert r.plan is not None and r.plan.chunk == 10
    monkeypatch.setitem(POPULATION_RUNNERS, IF, real)
    assert_same(simulate(snn, X, 10), r)


def test_record_unknown_node_is_refused(snns) -> None:
    with pytest.raises(BackendError, match="no such node"):
        simulate(snns["digits_cnn"], X, 4, record=["nope"])


def test_evaluate_memory_option(tmp_path: Path) -> None:
    """``evaluate --memory``: a small budget gives the same JSON; a tiny one a clear error."""
    import json

    from click.testing import CliRunner

    from onnx2snn.cli.main import main

    def invoke(*args: object):
        return CliRunner().invoke(main, [str(a) for a in args])

    out = tmp_path / "cnn"
    assert invoke("convert", MODELS / "digits_cnn.onnx", "--calib", MODELS / "digits_calib.npz",
                  "-o", out, "--quiet").exit_code == 0
    base = ["evaluate", out, "--data", MODELS / "digits_test.npz", "-T", "4,16", "--json",
            "--limit", "60"]
    whole = invoke(*base)
    assert whole.exit_code == 0, whole.stderr
    small = invoke(*base, "--memory", "290MiB")  # above the fixed im2col scratch: a few steps
    assert small.exit_code == 0, small.stderr
    assert json.loads(small.stdout)["results"] == json.loads(whole.stdout)["results"]
    tiny = invoke(*base, "--memory", "1MB")
    assert tiny.exit_code != 0 and "memory budget" in tiny.stderr
    assert "Traceback" not in tiny.stderr
    bad = invoke(*base, "--memory", "lots")
    assert bad.exit_code != 0 and "cannot read the memory budget" in bad.stderr


def test_shards_merge_sops_with_the_same_bits(snns) -> None:
    """Events are integers: summed over any split, they give the SOPs of one run exactly."""
    from onnx2snn.backends.numpy.simulator import fanout, sops_from_events

    snn = snns["digits_resnet"]
    whole = simulate(snn, X, 12, encoder="poisson", seed=2)
    halves = [simulate(snn, X[:10], 12, encoder="poisson", seed=2),
              simulate(snn, X[10:], 12, encoder="poisson", seed=2, first_sample=10)]
    events = {k: halves[0].events[k] + halves[1].events[k] for k in halves[0].events}
    np.testing.assert_array_equal(sops_from_events(events, fanout(snn), 12), whole.sops)

