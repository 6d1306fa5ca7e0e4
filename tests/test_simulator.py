"""The reference simulator against the time-step contract (DESIGN.md §3), computed by hand.

Tiny graphs are built directly from IR nodes (Input -> Dense -> IF -> Dense -> Readout, ...) with
inputs and thresholds that are exact binary fractions, so every membrane potential below is exact
in float32 and the traces in the comments are the expected values, not a second implementation.
One literal step-by-step transcription of the contract (``_reference``) checks the vectorized
simulator on random multi-layer graphs in both schedules.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnx2snn.backends.numpy import simulate
from onnx2snn.errors import BackendError
from onnx2snn.ir import IF, AvgPool, Conv, Dense, Graph, Input, MaxPoolGate, Readout, Reshape


def chain(x_size: int, w1, w2, *, threshold=1.0, out_scale=None, v0=0.0, bias=None,
          reset="subtract", b1=None) -> Graph:
    """Input(x_size) -> Dense(w1, b1) -> IF -> Dense(w2) -> Readout."""
    w1, w2 = np.atleast_2d(np.asarray(w1, float)), np.atleast_2d(np.asarray(w2, float))
    n = w1.shape[0]
    theta = np.asarray(threshold, float)
    return Graph((
        Input(name="x", inputs=(), shape=(x_size,)),
        Dense(name="d1", inputs=("x",), shape=(n,), weight=w1, bias=b1),
        IF(name="h", inputs=("d1",), shape=(n,), threshold=theta,
           out_scale=theta if out_scale is None else np.asarray(out_scale, float),
           v0=np.asarray(v0, float), bias=None if bias is None else np.asarray(bias, float),
           reset=reset),
        Dense(name="d2", inputs=("h",), shape=(w2.shape[0],), weight=w2),
        Readout(name="out", inputs=("d2",), shape=(w2.shape[0],)),
    ), ("out",))


def spike_steps(result, name: str = "h") -> list[int]:
    """1-based steps at which population ``name`` (one neuron, batch 1) fired."""
    return [t + 1 for t in np.flatnonzero(result.spikes[name])]


def received_steps(result, name: str = "h") -> list[int]:
    """1-based steps at which the spikes of ``name`` reached its synapses (``record``)."""
    out = result.recorded[name].reshape(result.timesteps, -1)[:, 0]
    return [t + 1 for t in np.flatnonzero(out)]


def readout(result) -> np.ndarray:
    return result.predictions["out"][:, 0, 0]


X = np.array([[0.375]])  # 3/8: exact in binary


# -- one neuron, by hand -------------------------------------------------------------------------
def test_subtract_reset_ideal() -> None:
    # v: .375 .75 1.125→spike(.125) .5 .875 1.25→spike(.25) .625 1.0→spike(≥: 0) | period 8
    r = simulate(chain(1, 1, 1), X, 16, record=["h"], dtype=np.float64)
    assert spike_steps(r) == [3, 6, 8, 11, 14, 16]
    assert received_steps(r) == spike_steps(r)  # no synaptic delay in the ideal schedule


def test_zero_reset_ideal() -> None:
    # v: .375 .75 1.125→spike, v=0 ... the residue is lost: one spike every 3 steps
    r = simulate(chain(1, 1, 1, reset="zero"), X, 12, record=["h"])
    assert spike_steps(r) == [3, 6, 9, 12]


def test_v0_half_threshold() -> None:
    # v: .5+.375=.875, 1.25→spike(.25), .625, 1.0→spike(0), .375, .75, 1.125→spike(.125), .5
    r = simulate(chain(1, 1, 1, v0=0.5), X, 8, record=["h"])
    assert spike_steps(r) == [2, 4, 7]


def test_loihi_schedule_strict_threshold_and_delay() -> None:
    # Input delayed one step: I = 0, .375, .375, ...; v: 0 .375 .75 1.125→s(.125) .5 .875
    # 1.25→s(.25) .625 1.0 (not > 1: no spike) 1.375→s(.375)
    r = simulate(chain(1, 1, 1), X, 10, schedule="loihi", record=["h"])
    assert spike_steps(r) == [4, 7, 10]
    # ... and the population's spikes reach the readout one step later still (t = 5, 8, [11])
    assert received_steps(r) == [5, 8]
    ro = readout(r) * np.arange(1, 11)  # accumulated current
    assert np.allclose(np.diff(np.concatenate([[0], ro])), [0, 0, 0, 0, 1, 0, 0, 1, 0, 0])


def test_strict_vs_nonstrict_threshold_alone() -> None:
    # x = 0.25, θ = 1: v reaches exactly 1.0 at t = 4. Ideal fires there (v ≥ θ); loihi (v > θ)
    # sees I = 0, .25, .25, ... and v = 1.0 at t = 5, so it first fires at t = 6 (v = 1.25).
    x = np.array([[0.25]])
    assert spike_steps(simulate(chain(1, 1, 1), x, 8, record=["h"])) == [4, 8]
    assert spike_steps(simulate(chain(1, 1, 1), x, 8, record=["h"], schedule="loihi"))[0] == 6


def test_readout_is_cumulative_mean() -> None:
    # Ideal spikes at 3, 6, 8 (see above); d2 weight 2: readout current 2 at those steps.
    r = simulate(chain(1, 1, 2), X, 8)
    counts = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    assert np.allclose(readout(r), 2 * counts / np.arange(1, 9))
    assert r.predictions["out"].shape == (8, 1, 1)


def test_out_scale_multiplies_spikes() -> None:
    # θ = 1 but each spike is sent as 0.5: same spike times, half the readout.
    r = simulate(chain(1, 1, 1, out_scale=0.5), X, 8, record=["h"])
    assert spike_steps(r) == [3, 6, 8]
    assert np.allclose(r.recorded["h"][[2, 5, 7], 0, 0], 0.5)
    assert np.isclose(readout(r)[-1], 0.5 * 3 / 8)


def test_population_bias_is_a_current_every_step() -> None:
    # No input (x = 0), IF bias 0.375: the same train as input 0.375: spikes at 3, 6, 8.
    r = simulate(chain(1, 1, 1, bias=0.375), np.zeros((1, 1)), 8, record=["h"])
    assert spike_steps(r) == [3, 6, 8]


def test_biases_are_not_delayed_in_loihi_schedule() -> None:
    # Bias 0.375 with no input: in the loihi schedule the bias is in the neuron, so v grows from
    # t = 1 (.375 .75 1.125→s): the first spike at t = 3 as in the ideal schedule, not 4.
    zero = np.zeros((1, 1))
    for g in (chain(1, 1, 1, bias=0.375), chain(1, 1, 1, b1=[0.375])):  # IF bias, synapse bias
        r = simulate(g, zero, 8, schedule="loihi", record=["h"])
        assert spike_steps(r)[0] == 3
    # while the same current as an input arrives one step late
    r = simulate(chain(1, 1, 1), X, 8, schedule="loihi", record=["h"])
    assert spike_steps(r)[0] == 4


def test_per_neuron_and_per_channel_thresholds() -> None:
    # Two neurons with θ = 1 and θ = 0.5, both fed 0.375: rates 3/8 and 6/8.
    r = simulate(chain(1, [[1], [1]], [[1, 0], [0, 1]], threshold=[1.0, 0.5]), X, 8,
                 record=["h"])
    s = r.recorded["h"][:, 0] / np.array([1.0, 0.5])
    assert [t + 1 for t in np.flatnonzero(s[:, 0])] == [3, 6, 8]
    assert [t + 1 for t in np.flatnonzero(s[:, 1])] == [2, 3, 4, 6, 7, 8]
    # Per channel (C, 1, 1) on a (2, 1, 2) population behind a 1x1 identity convolution.
    theta = np.array([1.0, 0.5]).reshape(2, 1, 1)
    g = Graph((
        Input(name="x", inputs=(), shape=(2, 1, 2)),
        Conv(name="c", inputs=("x",), shape=(2, 1, 2), weight=np.eye(2).reshape(2, 2, 1, 1)),
        IF(name="h", inputs=("c",), shape=(2, 1, 2), threshold=theta, out_scale=theta,
           v0=np.zeros(1)),
        Reshape(name="f", inputs=("h",), shape=(4,)),
        Dense(name="d", inputs=("f",), shape=(4,), weight=np.eye(4)),
        Readout(name="out", inputs=("d",), shape=(4,)),
    ), ("out",))
    r = simulate(g, np.full((1, 2, 1, 2), 0.375), 8, record=["h"])
    counts = (r.recorded["h"][:, 0] > 0).sum(axis=0)
    assert counts.tolist() == [[[3, 3]], [[6, 6]]]
    assert np.allclose(r.predictions["out"][-1, 0], [0.375] * 4)  # 3·1/8 and 6·0.5/8


def test_layer_latency_in_loihi_schedule() -> None:
    """An L-layer net fed at t = 1 answers at t = L + 1 (every source is delayed one step)."""
    def net(layers: int) -> Graph:
        nodes = [Input(name="x", inputs=(), shape=(1,))]
        prev = "x"
        for i in range(layers - 1):
            nodes += [Dense(name=f"d{i}", inputs=(prev,), shape=(1,), weight=np.ones((1, 1))),
                      IF(name=f"h{i}", inputs=(f"d{i}",), shape=(1,), threshold=np.array(0.5),
                         out_scale=np.array(1.0), v0=np.zeros(1))]
            prev = f"h{i}"
        nodes += [Dense(name="dl", inputs=(prev,), shape=(1,), weight=np.ones((1, 1))),
                  Readout(name="out", inputs=("dl",), shape=(1,))]
        return Graph(tuple(nodes), ("out",))

    x = np.ones((1, 1))
    for layers in (1, 2, 3, 4):
        pred = simulate(net(layers), x, 8, schedule="loihi").predictions["out"][:, 0, 0]
        first = int(np.flatnonzero(pred)[0]) + 1
        assert first == layers + 1, f"{layers} layer(s) answered at t={first}"
        ideal = simulate(net(layers), x, 8).predictions["out"][:, 0, 0]
        assert ideal[0] > 0  # the ideal schedule answers at once


# -- a literal transcription of the contract, against the vectorized simulator ---------------------
def _reference(layers, x, steps, strict, reset, v0s):
    """Step by step, population by population, as DESIGN.md §3 writes it (Dense chain only)."""
    b = len(x)
    sent = [np.zeros((steps + 1, b, w.shape[0])) for w, _, _ in layers]  # sent[l][t], t from 1
    v = [np.broadcast_to(v0, (b, w.shape[0])).astype(float).copy()
         for (w, _, _), v0 in zip(layers, v0s)]
    readout = np.zeros((steps, b, layers[-1][0].shape[0]))
    acc = 0.0
    for t in range(1, steps + 1):
        src = x if not strict else (x if t > 1 else np.zeros_like(x))
        for li, (w, bias, theta) in enumerate(layers):
            current = src @ w.T + bias
            if theta is None:  # readout
                acc = acc + current
                readout[t - 1] = acc / t
                break
            v[li] += current
            s = v[li] > theta if strict else v[li] >= theta
            v[li] = v[li] - theta * s if reset == "subtract" else np.where(s, 0.0, v[li])
            sent[li][t] = theta * s
            src = sent[li][t - 1] if strict else sent[li][t]
    return readout


@pytest.mark.parametrize("schedule", ["ideal", "loihi"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_matches_literal_contract_on_random_nets(schedule: str, reset: str) -> None:
    rng = np.random.default_rng(1)
    sizes = [5, 7, 6, 4]
    layers, nodes, prev = [], [Input(name="x", inputs=(), shape=(5,))], "x"
    v0s = []
    for i, (fi, fo) in enumerate(zip(sizes, sizes[1:])):
        w, b = rng.normal(size=(fo, fi)), rng.normal(size=fo) * 0.2
        nodes.append(Dense(name=f"d{i}", inputs=(prev,), shape=(fo,), weight=w, bias=b))
        if i < len(sizes) - 2:
            theta = rng.uniform(0.5, 2.0, size=fo)
            v0 = theta / 2 if i == 0 else np.zeros(fo)
            nodes.append(IF(name=f"h{i}", inputs=(f"d{i}",), shape=(fo,), threshold=theta,
                            out_scale=theta, v0=v0, reset=reset))
            layers.append((w, b, theta))
            v0s.append(v0)
            prev = f"h{i}"
        else:
            nodes.append(Readout(name="out", inputs=(f"d{i}",), shape=(fo,)))
            layers.append((w, b, None))
            v0s.append(0.0)
    g = Graph(tuple(nodes), ("out",))
    x = rng.uniform(0, 1, size=(6, 5))
    got = simulate(g, x, 40, schedule=schedule, dtype=np.float64).predictions["out"]
    want = _reference(layers, x, 40, schedule == "loihi", reset, v0s)
    assert np.allclose(got, want, atol=1e-12)


# -- encoders ------------------------------------------------------------------------------------
def identity_net(n: int) -> Graph:
    return Graph((Input(name="x", inputs=(), shape=(n,)),
                  Dense(name="d", inputs=("x",), shape=(n,), weight=np.eye(n)),
                  Readout(name="out", inputs=("d",), shape=(n,))), ("out",))


def test_poisson_encoder_is_seeded() -> None:
    g, x = identity_net(4), np.full((3, 4), 0.5)
    a = simulate(g, x, 50, encoder="poisson", seed=7, record=["x"]).recorded["x"]
    b = simulate(g, x, 50, encoder="poisson", seed=7, record=["x"]).recorded["x"]
    c = simulate(g, x, 50, encoder="poisson", seed=8, record=["x"]).recorded["x"]
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_poisson_rate_approaches_x() -> None:
    x = np.array([[0.0, 0.1, 0.5, 0.9, 1.0]])
    pred = simulate(identity_net(5), x, 4000, encoder="poisson", seed=3).predictions["out"]
    # Bernoulli mean over 4000 steps: standard deviation ≤ 0.008; 4.5 sigma is 0.036
    assert np.abs(pred[-1, 0] - x[0]).max() < 0.036
    assert pred[-1, 0, 0] == 0.0 and pred[-1, 0, 4] == 1.0
    # and it gets closer with more steps (the error at 40 steps is larger on average)
    errs_short = np.abs(pred[39, 0] - x[0])[1:4].mean()
    assert np.abs(pred[-1, 0] - x[0])[1:4].mean() < errs_short + 1e-9


def test_poisson_does_not_depend_on_batch_size() -> None:
    rng = np.random.default_rng(0)
    g, x = identity_net(3), rng.uniform(size=(10, 3))
    whole = simulate(g, x, 20, encoder="poisson", seed=5).predictions["out"]
    split = simulate(g, x, 20, encoder="poisson", seed=5, batch_size=3).predictions["out"]
    assert np.array_equal(whole, split)


def test_unknown_options_raise() -> None:
    g, x = identity_net(2), np.zeros((1, 2))
    with pytest.raises(BackendError, match="schedule"):
        simulate(g, x, 4, schedule="lava")
    with pytest.raises(BackendError, match="encoder"):
        simulate(g, x, 4, encoder="rate")
    with pytest.raises(BackendError, match="timesteps"):
        simulate(g, x, 0)


# -- numerics: dtype and batching ----------------------------------------------------------------
def random_net(seed: int = 0) -> tuple[Graph, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.5, 1.5, size=8)
    g = Graph((
        Input(name="x", inputs=(), shape=(6,)),
        Dense(name="d1", inputs=("x",), shape=(8,), weight=rng.normal(size=(8, 6)),
              bias=rng.normal(size=8) * 0.1),
        IF(name="h", inputs=("d1",), shape=(8,), threshold=theta, out_scale=theta,
           v0=theta / 2),
        Dense(name="d2", inputs=("h",), shape=(3,), weight=rng.normal(size=(3, 8))),
        Readout(name="out", inputs=("d2",), shape=(3,)),
    ), ("out",))
    return g, rng.uniform(0, 1, size=(20, 6))


def test_float32_and_float64_agree() -> None:
    g, x = random_net()
    r32 = simulate(g, x, 64, dtype=np.float32, record=["h"])
    r64 = simulate(g, x, 64, dtype=np.float64, record=["h"])
    assert r32.recorded["h"].dtype == np.float32 and r64.recorded["h"].dtype == np.float64
    assert np.allclose(r32.predictions["out"], r64.predictions["out"], atol=1e-5)
    assert np.array_equal(r32.spikes["h"], r64.spikes["h"])


@pytest.mark.parametrize("schedule", ["ideal", "loihi"])
def test_batch_size_splitting_is_invisible(schedule: str) -> None:
    g, x = random_net(1)
    whole = simulate(g, x, 32, schedule=schedule, record=["h"])
    for bs in (1, 7, 20, 100):
        part = simulate(g, x, 32, schedule=schedule, record=["h"], batch_size=bs)
        assert part.batch == whole.batch == 20
        assert np.array_equal(part.predictions["out"], whole.predictions["out"])
        assert np.array_equal(part.recorded["h"], whole.recorded["h"])
        assert np.array_equal(part.spikes["h"], whole.spikes["h"])
        assert np.array_equal(part.sops, whole.sops)
        assert part.firing_rate() == whole.firing_rate()


# -- counts: spikes, firing rate, synaptic operations ----------------------------------------------
def test_spike_counts_firing_rate_and_sops_by_hand() -> None:
    # Two hidden neurons fed 0.375 and 0.75 (θ = 1): spikes at 3, 6, 8 and at 2, 3, 4, 6, 7, 8.
    # Each hidden neuron fans out to 3 readout synapses (d2 is 3x2), so each spike is 3 SOPs.
    g = chain(1, [[1.0], [2.0]], np.ones((3, 2)))
    x = np.array([[0.375], [0.375]])  # batch of 2 identical samples
    r = simulate(g, x, 8)
    per_step = np.array([0, 1, 2, 1, 0, 2, 1, 2])  # neuron 0 at 3, 6, 8; neuron 1 at 2,3,4,6,7,8
    assert r.spikes["h"].tolist() == (2 * per_step).tolist()
    assert r.neurons == {"h": 2}
    assert np.array_equal(r.sops, 3 * 2 * per_step)
    assert r.sops_per_sample() == 3 * 9
    assert r.sops_per_sample(4) == 3 * 4
    assert r.firing_rate() == pytest.approx(9 / (2 * 8))
    assert r.firing_rate(2) == pytest.approx(1 / (2 * 2))


def test_poisson_input_spikes_count_as_sops() -> None:
    # Poisson input of 4 values fanning out through a 5x4 dense layer: 5 SOPs per input spike.
    g = Graph((Input(name="x", inputs=(), shape=(4,)),
               Dense(name="d", inputs=("x",), shape=(5,), weight=np.ones((5, 4))),
               Readout(name="out", inputs=("d",), shape=(5,))), ("out",))
    x = np.array([[1.0, 1.0, 0.0, 1.0]])  # p = 1 and 0: deterministic spikes
    r = simulate(g, x, 6, encoder="poisson")
    assert r.spikes["x"].tolist() == [3] * 6
    assert r.sops.tolist() == [15] * 6
    direct = simulate(g, x, 6)
    assert direct.sops.sum() == 0  # an analog input current is not a spike


# -- max-pool gate -------------------------------------------------------------------------------
WINDOW_X = np.array([0.25, 0.625, 0.75, 0.375]).reshape(1, 1, 2, 2)


def window_net(pool: str, readout_width: int = 1) -> Graph:
    """Input (1, 2, 2) -> 1x1 identity Conv -> IF (θ = 1) -> 2x2 pool -> Dense -> Readout."""
    kw = dict(name="p", inputs=("h",), shape=(1, 1, 1), kernel=(2, 2), strides=(2, 2))
    return Graph((
        Input(name="x", inputs=(), shape=(1, 2, 2)),
        Conv(name="c", inputs=("x",), shape=(1, 2, 2), weight=np.ones((1, 1, 1, 1))),
        IF(name="h", inputs=("c",), shape=(1, 2, 2), threshold=np.array(1.0),
           out_scale=np.array(1.0), v0=np.zeros(1)),
        MaxPoolGate(**kw) if pool == "gate" else AvgPool(**kw),
        Reshape(name="f", inputs=("p",), shape=(1,)),
        Dense(name="d", inputs=("f",), shape=(readout_width,),
              weight=np.ones((readout_width, 1))),
        Readout(name="out", inputs=("d",), shape=(readout_width,)),
    ), ("out",))


def test_maxpool_gate_passes_the_most_active_input() -> None:
    # Four neurons (θ = 1) in one 2x2 window fed .25, .625, .75, .375; counts include step t,
    # and the gate passes the leader's spike only when the largest count M grows.
    #   t=1: no spikes;          counts 0 0 0 0, M 0 → 0
    #   t=2: spikes on 1, 2;     counts 0 1 1 0, M 1 → input 1 (first of the tie) → 1
    #   t=3: spikes on 2, 3;     counts 0 1 2 1, M 2 → input 2                    → 1
    #   t=4: spikes on 0, 1, 2;  counts 1 2 3 1, M 3 → input 2                    → 1
    #   t=5: spike on 1 only;    counts 1 3 3 1, M 3 → input 1 only draws level   → 0
    #   t≥5: input 2 leads: the gate sends exactly its spikes, e.g. not input 1's lone spike
    #        at t = 13.
    g = window_net("gate")
    r = simulate(g, WINDOW_X, 64, record=["h", "p"])
    gate = r.recorded["p"][:, 0, 0, 0, 0]
    winner = r.recorded["h"][:, 0, 0, 1, 0]  # row-major index 2
    assert gate[:5].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert np.array_equal(gate[4:], winner[4:])
    assert r.recorded["h"][12, 0, 0].tolist() == [[0, 1], [0, 0]]  # t = 13: input 1 alone
    assert gate.sum() == winner.sum() == 48  # the largest count, exactly: rate .75
    assert r.predictions["out"][-1, 0, 0] == pytest.approx(0.75, abs=1e-6)
    # the gate is no population: it has no spike count of its own
    assert set(r.spikes) == {"h"}


def overlapping_gate_net(size: int = 6) -> Graph:
    """Input (2, size, size) -> IF (θ = 1, v0 = θ/2) -> 3x3 stride-1 max-pool gate (pads 1)."""
    shape = (2, size, size)
    return Graph((
        Input(name="x", inputs=(), shape=shape),
        IF(name="h", inputs=("x",), shape=shape, threshold=np.array(1.0),
           out_scale=np.array(1.0), v0=np.array(0.5)),
        MaxPoolGate(name="p", inputs=("h",), shape=shape, kernel=(3, 3), strides=(1, 1),
                    pads=(1, 1, 1, 1)),
        Reshape(name="f", inputs=("p",), shape=(int(np.prod(shape)),)),
        Readout(name="out", inputs=("f",), shape=(int(np.prod(shape)),)),
    ), ("out",))


@pytest.mark.parametrize("chunk", [None, 5])
def test_maxpool_gate_count_is_the_largest_input_count(chunk: int | None) -> None:
    # Overlapping 3x3 windows of neurons with close rates, where ties are frequent: at every
    # step the gate has passed exactly the largest input count of its window (the max pool of
    # the rates at every T), never more; the previous gate, which also passed an input that
    # drew level with the leader, overcounted here. Cut into chunks of 5 steps: the same.
    rng = np.random.default_rng(3)
    g = overlapping_gate_net()
    x = rng.uniform(0.3, 0.4, size=(3, 2, 6, 6))
    r = simulate(g, x, 40, record=["h", "p"], chunk=chunk)
    counts = np.cumsum(r.recorded["h"], axis=0)  # (T, B, C, H, W)
    padded = np.pad(counts, ((0, 0),) * 3 + ((1, 1), (1, 1)), constant_values=-1)
    largest = np.max([padded[..., i:i + 6, j:j + 6] for i in range(3) for j in range(3)], axis=0)
    passed = np.cumsum(r.recorded["p"], axis=0)
    assert set(np.unique(r.recorded["p"])) <= {0.0, 1.0}  # spikes, not values
    assert np.array_equal(passed, largest)


def test_sops_through_pools_by_hand() -> None:
    # Average pool then a 3-wide dense layer: a spike costs 1 pooling add + the 3 synapses of
    # the pooled value it changes: 4 SOPs.
    r = simulate(window_net("avg", readout_width=3), WINDOW_X, 16)
    assert np.array_equal(r.sops, 4 * r.spikes["h"])
    # Max-pool gate: only the spikes it lets through reach the 3 synapses (see the trace above:
    # t = 1..5 pass 0, 1, 1, 1, 0 spikes although 0, 2, 2, 3, 1 arrive).
    r = simulate(window_net("gate", readout_width=3), WINDOW_X, 16, record=["p"])
    passed = r.recorded["p"][:, 0, 0, 0, 0]
    assert r.spikes["h"][:5].tolist() == [0, 2, 2, 3, 1]
    assert np.array_equal(r.sops, 3 * passed)
    assert r.sops[:5].tolist() == [0, 3, 3, 3, 0]
