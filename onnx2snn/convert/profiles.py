"""The target's neuron: one profile per backend neuron, which the conversion reads.

Every target runs the same SNN graph with a neuron of its own, and the neuron decides which
conversion recipe works (DESIGN.md §3-6). A profile says, in one place:

* ``reset``: what a spike does to the potential — ``subtract`` (v −= θ, keeps the residue; the
  rate-coding identity of DESIGN.md §3 holds), ``zero`` (v = 0, the overshoot of every spike is
  lost: rate 1/⌈θ/I⌉ instead of I/θ for a constant input I), or ``graded`` (sigma-delta: the
  neuron sends its value, no rate code);
* ``strict``: the spike test is v > θ (Loihi, NIR) instead of v ≥ θ;
* ``initial_potential``: whether v0 ≠ 0 can be written (NIR neurons have no initial state; Loihi
  ``lif`` could start at v0 in Lava, but its deployable file, lava-dl netx, cannot say so, so the
  ``lif`` profile keeps v0 = 0 and the netx file is always written);
* ``spikes``: what a message carries; ``precision``: the arithmetic of the target;
* ``recipe``: the default conversion recipe for this neuron, each choice measured in
  docs/conversion.md ("A recipe per target neuron").

Where each neuron's arithmetic lives, one module per target (``arithmetic``; its docstring states
the per-step equations and units, its functions implement them): Loihi 2 fixed point in
``onnx2snn.targets.loihi2`` (register widths, wrap-around and saturation, the lif / if-subtract /
sdnn steps, weight mantissa and exponent rules, threshold and bias widths; the quantization
pass, the Loihi IR nodes, the bit-exact reference and the Lava builder all use it); the float
reference neuron in ``onnx2snn.backends.numpy.simulator`` (the time-step contract itself,
DESIGN.md §3); NIR's neuron, as the file means it, in ``onnx2snn.backends.nir.nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx2snn.convert.recipe import Recipe, RecipeError
from onnx2snn.targets import loihi2

# the recipes each reset rule gets by default (measured: docs/conversion.md). Subtract: one λ per
# channel (99.9th percentile) and v0 = θ/2 won --recipe auto on all four MNIST models
SUBTRACT_RECIPE = Recipe(norm="channel-percentile", v0="half")
# reset to zero: λ = max activation (small I/θ, where 1/⌈θ/I⌉ bends least), then each channel's
# spike worth raised until its mean output meets the ANN's, for the T the tables use
ZERO_RECIPE = Recipe(norm="max", reset="zero", gain_calibration=True, correction_steps=64)


@dataclass(frozen=True)
class NeuronProfile:
    """What a target's neuron does, and the recipe that suits it (see the module docstring)."""

    name: str
    reset: str
    strict: bool
    initial_potential: bool
    spikes: str
    precision: str
    recipe: Recipe
    arithmetic: str  # the module that states and implements the neuron's per-step arithmetic

    def check(self, recipe: Recipe) -> list[str]:
        """What in ``recipe`` this neuron cannot run as converted (empty when it can)."""
        problems = []
        if self.reset in ("subtract", "zero") and recipe.reset != self.reset:
            problems.append(f"{self.name} neurons reset by {self.reset}, the recipe by "
                            f"{recipe.reset}: the target would not run the network you measured "
                            f"(convert with --reset {self.reset})")
        if not self.initial_potential and recipe.v0 != "zero":
            problems.append(f"{self.name} neurons have no initial potential: convert with "
                            "--v0 zero")
        return problems


NUMPY = "onnx2snn.backends.numpy.simulator"
LOIHI2 = loihi2.__name__
NIR = "onnx2snn.backends.nir.nodes"
PROFILES: dict[str, NeuronProfile] = {p.name: p for p in (
    NeuronProfile("numpy", "subtract", False, True, "binary, worth λ (float)",
                  "float32 (or float64)", SUBTRACT_RECIPE, NUMPY),
    NeuronProfile("loihi-if-subtract", loihi2.RESET["if-subtract"], True, True, "binary, worth λ",
                  loihi2.PRECISION, SUBTRACT_RECIPE, LOIHI2),
    NeuronProfile("loihi-lif", loihi2.RESET["lif"], True, False, "binary, worth λ", loihi2.PRECISION,
                  ZERO_RECIPE, LOIHI2),
    NeuronProfile("loihi-sdnn", "graded", True, False, "graded deltas (state >> 6)",
                  loihi2.SDNN_PRECISION, Recipe(), LOIHI2),
    NeuronProfile("nir-zero", "zero", True, False, "binary (NIR IF, v_reset = 0)",
                  "the consumer's (float32 arrays in the file)", ZERO_RECIPE, NIR),
    NeuronProfile("nir-subtract", "subtract", True, False,
                  "binary (IF read as nir 1.0.4's: reset by subtraction; --nir-for sinabs)",
                  "the consumer's (float32 arrays in the file)", Recipe(), NIR),
    NeuronProfile("nir-exact", "subtract", True, False,
                  "binary (I -> Threshold -> Scale(-θ) -> I loop)",
                  "the consumer's (float32 arrays in the file)", Recipe(), NIR),
)}


def profile_for(target: str, neuron: str = "sdnn", nir_reset: str = "zero",
                nir_for: str = "generic") -> NeuronProfile:
    """The neuron profile of ``target`` with its neuron options (``--neuron``, ``--nir-reset``,
    ``--nir-for``: a file written for Sinabs declares nir 1.0.4's IF, which resets by
    subtraction, so the network is converted for that reset)."""
    nir_name = "nir-subtract" if nir_for == "sinabs" and nir_reset == "zero" else f"nir-{nir_reset}"
    name = {"numpy": "numpy", "loihi": f"loihi-{neuron}", "nir": nir_name}.get(target)
    if name not in PROFILES:
        raise RecipeError(f"no neuron profile for target {target!r} (neuron {neuron!r}, NIR "
                          f"reset {nir_reset!r}); known: {', '.join(PROFILES)}")
    return PROFILES[name]
