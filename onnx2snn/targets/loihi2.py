"""Loihi 2's fixed-point arithmetic, as lava-nc 0.10.0's bit-accurate CPU models compute it.

The one place that states the target's registers and per-step equations. The quantization pass
(``onnx2snn.quantize``: scale choice, graph passes) fits a network into these registers, the IR
nodes (``onnx2snn.ir.loihi``) hold the integers and state their rate limits with these functions,
the reference simulator (``onnx2snn.backends.numpy.fixed_point``) steps them with these functions,
and the Lava builder (``onnx2snn.backends.loihi.network``) hands them to Lava by these rules, so
the reference and Lava agree spike for spike. Models matched: ``PyLifModelBitAcc``,
``PySigmaDeltaModelFixed``, ``PyDenseModelBitAcc``, ``PyConvModelFixed`` (DESIGN.md §5).

Units. A synapse layer sums integers in *weight units*; a spiking neuron's potential is in
*v units*, one weight unit being ``V_UNIT`` = 2**6 v units (the synaptic input and the threshold
are shifted left by 6, the bias is not). A sigma-delta neuron's state is in weight units; it
sends ``state >> 6``.

Registers:

* weights: signed 8-bit mantissa m, |m| ≤ 127 (kept symmetric), one exponent e per synapse layer,
  w = m · 2**e with e ≤ 7; Dense sums floor(Σ m·x · 2**e) (arithmetic shift); Lava's Dense keeps
  only even mixed-sign 8-bit weights, so it is given 2·m at exponent e − 1; Lava's CPU Conv
  ignores the exponent, so it is given m · 2**e (e ≥ 0) and its sum wraps at 24 bits;
* u (current), v (potential), σ (sigma-delta state): signed 24 bits; u wraps (two's complement,
  with the CPU model's asymmetric comparisons), v saturates at ±(2**23 − 1);
* vth: unsigned 17-bit mantissa (spiking neurons, compared as vth << 6); a sigma-delta threshold
  is in state units (up to 2**23 − 1);
* bias: signed 13-bit mantissa · 2**bias_exp, in v units (lava-dl netx fixes CUBA's bias_exp at
  6, which puts the bias in weight units); sigma-delta: 16-bit mantissa in units of 2**6;
* the input: unsigned ``bits``-bit graded messages, x_int = clip(round(x · scale), 0, 2**bits − 1).

Per step, with a the integer sum of every synapse layer into the population (weight units):

``lif`` (Lava ``LIF``, du = 4095: u holds only this step's input; dv = 0: v does not leak) and
``if-subtract`` (our ``IFSubtract`` process: the same with reset by subtraction; simulation
only)::

    u = wrap_u(a << 6);   v = sat24(v + u + bias)          (bias = bias_mant << bias_exp)
    s = v > (vth << 6)
    lif: v = 0 where s;   if-subtract: v −= vth << 6 where s;   send s (binary)

``sdnn`` (Lava ``SigmaDelta``, ReLU, state_exp = 6)::

    σ += a;   act = max(σ + bias, 0);   δ = act − act_prev + r
    d = δ where |δ| ≥ vth else 0;   r = δ − d;   send d >> state_exp (graded)

Every state starts at 0, except v at v0 (in v units). Arrays are int64 (or float64 carrying
integers exactly, below 2**53).
"""

from __future__ import annotations

import math

import numpy as np

NEURON_MODES = ("sdnn", "lif", "if-subtract")
RESET = {"lif": "zero", "if-subtract": "subtract"}  # the spiking modes' reset rule

V_SHIFT = 6  # synaptic input and threshold are shifted left by 6 into the potential
V_UNIT = 1 << V_SHIFT  # v units per weight unit
STATE_BITS = 24  # u, v, sigma: signed 24-bit
UV_MAX = 1 << (STATE_BITS - 1)  # Lava's max_uv_val
VTH_MAX = 2**17 - 1  # spiking threshold mantissa: unsigned 17 bits
SDNN_VTH_MAX = UV_MAX - 1  # sigma-delta threshold, in state units
BIAS_MANT_MAX = 4095  # spiking bias mantissa: signed 13 bits
SDNN_BIAS_MANT_MAX = 2**15 - 1  # sigma-delta bias register: 16 bits, in units of 2**state_exp
# lava-nc 0.10.0's CPU Conv model keeps ``groups`` in an int8 (``AbstractPyConvModel``): 128 groups
# and more wrap to a negative count, its group loop runs zero times and the Conv sends zeros,
# silently. The Lava builder merges groups to stay under it (``network.regroup_for_lava``).
LAVA_CONV_GROUPS_MAX = 127
WEIGHT_MANT_MAX = 127  # weight mantissa: signed 8 bits (kept symmetric)
WEIGHT_EXP_MAX = 7  # the largest weight exponent
DENSE_WEIGHT_EXP_MIN = -8  # the lowest Dense weight exponent the quantization uses
# lava-dl netx builds SDNN neurons with state_exp = 6 and CUBA neurons with bias_exp = 6; the
# quantization uses the same, so the netx file and onnx2snn's own Lava network are one network
SDNN_STATE_EXP = 6
CUBA_BIAS_EXP = 6
LIF_DU = 4095  # Lava LIF current decay: u keeps only this step's input (an IF neuron)
LIF_DV = 0  # no leak of v
PRECISION = "Loihi 2 fixed point: 8-bit weight mantissas, 24-bit states, 17-bit vth"
SDNN_PRECISION = "Loihi 2 fixed point: 8-bit weights, 24-bit sigma state, 16-bit bias"


# -- registers -----------------------------------------------------------------------------------
def wrap24(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap into signed 24 bits (the clamp of Lava's Conv output).

    Where every value lies in [−2**23, 2**23) the wrap is the identity, and ``x`` itself is
    returned (two reductions instead of a float modulo as slow as the convolution before it;
    the caller must not write into the result)."""
    base = 1 << STATE_BITS
    if x.size == 0 or (x.min() >= -(base // 2) and x.max() < base // 2):
        return x
    return (x + base // 2) % base - base // 2


def wrap_u(u: np.ndarray) -> np.ndarray:
    """The LIF model's wrap of the current u (note the asymmetric comparisons of the CPU model).

    Where every u lies in (−UV_MAX, UV_MAX] the wrap is the identity, and ``u`` itself is
    returned (two reductions instead of two comparisons, two selections and their temporaries;
    the caller must not write into the result)."""
    if u.size == 0 or (u.max() <= UV_MAX and u.min() > -UV_MAX):
        return u
    w = np.where(u > UV_MAX, u - 2 * UV_MAX, u)
    return np.where(w <= -UV_MAX, u + 2 * UV_MAX, w)


def saturate_v(v: np.ndarray) -> np.ndarray:
    """The potential saturates at ±(2**23 − 1)."""
    return np.clip(v, -UV_MAX + 1, UV_MAX - 1)


# -- synapses ------------------------------------------------------------------------------------
def quantize_input(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """The integers the input source sends for analog ``x``: clip(round(x·scale), 0, 2**bits − 1)."""
    return np.clip(np.round(np.asarray(x, np.float64) * scale), 0, 2**bits - 1)


def apply_weight_exp(acc: np.ndarray, exp: int) -> np.ndarray:
    """acc · 2**exp as Lava's Dense does it: left shift, or arithmetic right shift (floor)."""
    if exp >= 0:
        return acc * float(2**exp)
    return np.floor(acc / float(2**-exp))


def weight_exponent(peak: float, lowest: int) -> int:
    """The smallest exponent e ≥ ``lowest`` at which weights of largest magnitude ``peak`` fit an
    8-bit mantissa (peak / 2**e ≤ 127); may exceed ``WEIGHT_EXP_MAX`` (the caller refuses)."""
    if peak == 0:
        return lowest
    return max(lowest, math.ceil(math.log2(peak / WEIGHT_MANT_MAX) - 1e-12))


def weight_mantissas(w: np.ndarray, exp: int) -> np.ndarray:
    """The mantissas round(w / 2**exp) (float64 holding integers)."""
    return np.round(w / 2.0**exp)


def lava_dense_weights(mant: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """What Lava's fixed-point Dense is given for mantissas ``mant`` at ``exp``: (2·m, exp − 1),
    because it keeps only even mixed-sign 8-bit weights (3 → 2, −5 → −6)."""
    return 2 * mant, exp - 1


# -- neurons -------------------------------------------------------------------------------------
def spiking_step(v: np.ndarray, a: np.ndarray, bias: np.ndarray, vth: int,
                 reset: str) -> tuple[np.ndarray, np.ndarray]:
    """One step of a ``lif`` (``reset`` "zero") or ``if-subtract`` ("subtract") population.

    ``v`` potentials (v units, int64), ``a`` synaptic input (weight units, int64), ``bias`` in v
    units, ``vth`` the threshold mantissa. Returns (new v, spikes as bool)."""
    vth_v = np.int64(vth) << V_SHIFT
    v = saturate_v(v + wrap_u(a << V_SHIFT) + bias)
    s = v > vth_v
    if reset == "zero":
        v[s] = 0
    else:
        v[s] -= vth_v
    return v, s


def sdnn_activation(sigma: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The sigma-delta ReLU activation max(σ + bias, 0) (state units)."""
    return np.maximum(sigma + bias, 0)


def sdnn_step(sigma: np.ndarray, act: np.ndarray, residue: np.ndarray, a: np.ndarray,
              bias: np.ndarray, vth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One step of a sigma-delta population (state units, int64; ``sigma`` is updated in place).

    Returns (σ, act, residue, d): d is the change sent, before the shift by state_exp
    (``sdnn_message``)."""
    sigma += a
    new_act = sdnn_activation(sigma, bias)
    delta = new_act - act + residue
    sent = np.where(np.abs(delta) >= vth, delta, 0)
    return sigma, new_act, delta - sent, sent


def sdnn_message(sent: np.ndarray, state_exp: int) -> np.ndarray:
    """The graded message of a change ``sent``: d >> state_exp (arithmetic shift)."""
    return sent >> state_exp


def spiking_rate(a: np.ndarray, bias: np.ndarray, vth: int) -> np.ndarray:
    """Rate limit of a spiking population for a constant input ``a`` (weight units) and ``bias``
    (v units): clip((a·64 + bias) / (vth·64), 0, 1) spikes per step."""
    return np.clip((a * V_UNIT + bias) / (vth * V_UNIT), 0.0, 1.0)


__all__ = ["BIAS_MANT_MAX", "CUBA_BIAS_EXP", "DENSE_WEIGHT_EXP_MIN", "LAVA_CONV_GROUPS_MAX",
           "LIF_DU", "LIF_DV",
           "NEURON_MODES", "PRECISION", "RESET", "SDNN_BIAS_MANT_MAX", "SDNN_PRECISION", "SDNN_STATE_EXP",
           "SDNN_VTH_MAX", "STATE_BITS", "UV_MAX", "VTH_MAX", "V_SHIFT", "V_UNIT",
           "WEIGHT_EXP_MAX", "WEIGHT_MANT_MAX", "apply_weight_exp", "lava_dense_weights",
           "quantize_input", "saturate_v", "sdnn_activation", "sdnn_message", "sdnn_step",
           "spiking_rate", "spiking_step", "weight_exponent", "weight_mantissas", "wrap24",
           "wrap_u"]
