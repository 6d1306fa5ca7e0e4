"""The Loihi 2 arithmetic module (onnx2snn.targets.loihi2) against hand-worked values of Lava's
fixed-point models, and the neuron profiles against the arithmetic they name.

Spike-for-spike agreement with Lava itself is tests/test_loihi_lava.py; these tests pin the
register rules one at a time so that a change to one of them names itself."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from onnx2snn.convert.profiles import PROFILES
from onnx2snn.targets import loihi2

I64 = np.int64


def test_every_profile_names_one_module_that_states_its_equations():
    for p in PROFILES.values():
        mod = importlib.import_module(p.arithmetic)
        doc = mod.__doc__ or ""
        assert "step" in doc and ("θ" in doc or "vth" in doc), p.name  # per-step equations
    assert {p.arithmetic for n, p in PROFILES.items() if n.startswith("loihi")} == {
        "onnx2snn.targets.loihi2"}
    assert {p.arithmetic for n, p in PROFILES.items() if n.startswith("nir")} == {
        "onnx2snn.backends.nir.nodes"}


@pytest.mark.parametrize("mode", ["lif", "if-subtract"])
def test_spiking_step_matches_the_profile(mode):
    """The profile says strict and the reset rule; the step does what the profile says."""
    prof = PROFILES[f"loihi-{mode}"]
    vth = 10
    zero = np.zeros(1, I64)
    # exactly at threshold: v = vth << 6 does not fire (strict v > vth)
    v, s = loihi2.spiking_step(np.zeros(1, I64), np.array([vth], I64), zero, vth,
                               loihi2.RESET[mode])
    assert prof.strict and not s[0] and v[0] == vth * 64
    # one weight unit more: fires; the residue is what the reset rule leaves
    v, s = loihi2.spiking_step(v, np.array([3], I64), zero, vth, loihi2.RESET[mode])
    assert s[0]
    assert v[0] == {"zero": 0, "subtract": 3 * 64}[prof.reset]


def test_potential_saturates_and_current_wraps_at_24_bits():
    top = loihi2.UV_MAX - 1
    v, s = loihi2.spiking_step(np.array([-top + 5], I64), np.zeros(1, I64),
                               np.array([-100], I64), loihi2.VTH_MAX, "zero")
    assert v[0] == -top and not s[0]  # saturates at −(2**23 − 1), does not wrap
    # u = a << 6 wraps: 2**17 weight units are 2**23 v units, one past the top, → −2**23
    assert loihi2.wrap_u(np.array([2**23], I64))[0] == 2**23  # the CPU model's > (not ≥)
    assert loihi2.wrap_u(np.array([2**23 + 1], I64))[0] == -(2**23) + 1
    assert loihi2.wrap_u(np.array([-(2**23)], I64))[0] == 2**23
    inside = np.array([-(2**23) + 1, 0, 2**23], I64)  # in range: the identity (the fast path)
    np.testing.assert_array_equal(loihi2.wrap_u(inside), inside)
    mixed = np.array([2**23 + 1, 5, -(2**23)], I64)  # one value out of range wraps only it
    np.testing.assert_array_equal(loihi2.wrap_u(mixed), [-(2**23) + 1, 5, 2**23])
    assert loihi2.wrap24(np.array([2**23, -(2**23) - 1]))[0] == -(2**23)
    assert loihi2.wrap24(np.array([2**23, -(2**23) - 1]))[1] == 2**23 - 1
    inside = np.array([-(2.0**23), 0.0, 2.0**23 - 1])  # in range: the identity (the fast path)
    np.testing.assert_array_equal(loihi2.wrap24(inside), inside)
    np.testing.assert_array_equal(loihi2.wrap24(np.array([2.0**23, 5.0])), [-(2.0**23), 5.0])


def test_weight_rules():
    # negative exponents floor (arithmetic shift), as Lava's Dense does
    assert loihi2.apply_weight_exp(np.array([-3.0, 3.0]), -1).tolist() == [-2.0, 1.0]
    assert loihi2.apply_weight_exp(np.array([-3.0]), 2).tolist() == [-12.0]
    # Lava's Dense keeps even weights only: 2·m at exponent e − 1
    w, e = loihi2.lava_dense_weights(np.array([3, -5]), 0)
    assert w.tolist() == [6, -10] and e == -1
    # the smallest exponent whose mantissas fit 8 bits
    assert loihi2.weight_exponent(127.0, 0) == 0
    assert loihi2.weight_exponent(127.5, 0) == 1
    assert loihi2.weight_exponent(1.0, -8) == -6  # 1 / 2**-6 = 64 ≤ 127 < 128
    assert loihi2.weight_exponent(0.0, -8) == -8
    assert loihi2.weight_mantissas(np.array([254.0, -3.0]), 1).tolist() == [127.0, -2.0]
    assert loihi2.quantize_input(np.array([-1.0, 0.5, 2.0]), 255.0, 8).tolist() == [0, 128, 255]


def test_sdnn_step_sends_thresholded_changes_and_keeps_the_residue():
    vth, bias = 64, np.zeros(1, I64)
    sigma, act, res = (np.zeros(1, I64) for _ in range(3))
    sent_all = []
    for a in (100, 0, -40, -30, 0):
        sigma, act, res, sent = loihi2.sdnn_step(sigma, act, res, np.array([a], I64), bias, vth)
        sent_all.append(int(sent[0]))
    # act: 100, 100, 60, 30, 30; deltas 100, 0, −40 (held), −70 (sent), 0
    assert sent_all == [100, 0, 0, -70, 0]
    assert int(act[0]) == 30 and int(res[0]) == 0
    assert loihi2.sdnn_message(np.array([100, -70]), 6).tolist() == [1, -2]  # floor shift


def test_rate_limit_is_the_mean_of_the_steps():
    """LoihiNeuron.forward's rate limit (spiking_rate) is what the subtractive step converges to."""
    vth, steps = 100, 4096
    a = np.arange(0, 130, 7, dtype=I64)
    bias = np.full_like(a, 32)
    v = np.zeros_like(a)
    total = np.zeros(a.shape)
    for _ in range(steps):
        v, s = loihi2.spiking_step(v, a, bias, vth, "subtract")
        total += s
    assert np.allclose(total / steps, loihi2.spiking_rate(a, bias, vth), atol=2 / steps)
