"""The target's neuron: one profile per backend neuron, which the conversion reads.

Every target runs the same SNN graph with a neuron of its own, and the neuron decides which
conversion recipe works (DESIGN.md §3-6). A profile says, in one place:

* ``reset``: what a spike does to the potential — ``subtract`` (v −= θ, keeps the residue; the
  rate-coding identity of DESIGN.md §3 holds), ``zero`` (v = 0, the overshoot of every spike is
  lost: rate 1/⌈θ/I⌉ instead of I/θ for a constant input I), or ``graded`` (sigma-delta: the
  neuron sends its value, no rate code);
* ``strict``: the spike test is v > θ (Loihi, NIR) instead of v ≥ θ;
* ``initial_potential``: whether v0 ≠ 0 can be written (NIR neurons have no initial state);
* ``spikes``: what a message carries; ``precision``: the arithmetic of the target;
* ``recipe``: the default conversion recipe for this neuron, each choice measured in
  docs/conversion.md ("A recipe per target neuron").

Where the target's arithmetic is implemented (kept there, named here so a reader can find it):
Loihi fixed point in ``onnx2snn/quantize.py`` (gains, mantissas/exponents) with its register
widths in ``onnx2snn/ir/loihi.py`` and its bit-exact reference in
``backends/numpy/fixed_point.py``; NIR's neuron in ``backends/nir/nodes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx2snn.convert.recipe import Recipe, RecipeError

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
    implemented_in: str

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


PROFILES: dict[str, NeuronProfile] = {p.name: p for p in (
    NeuronProfile("numpy", "subtract", False, True, "binary, worth λ (float)",
                  "float32 (or float64)", SUBTRACT_RECIPE, "backends/numpy/simulator.py"),
    NeuronProfile("loihi-if-subtract", "subtract", True, True, "binary, worth λ",
                  "Loihi 2 fixed point: 8-bit weight mantissas, 24-bit states, 17-bit vth",
                  SUBTRACT_RECIPE, "onnx2snn/quantize.py, onnx2snn/ir/loihi.py, "
                  "backends/numpy/fixed_point.py, backends/loihi/procs"),
    NeuronProfile("loihi-lif", "zero", True, True, "binary, worth λ",
                  "Loihi 2 fixed point: 8-bit weight mantissas, 24-bit states, 17-bit vth",
                  ZERO_RECIPE, "onnx2snn/quantize.py, onnx2snn/ir/loihi.py, "
                  "backends/numpy/fixed_point.py"),
    NeuronProfile("loihi-sdnn", "graded", True, False, "graded deltas (state >> 6)",
                  "Loihi 2 fixed point: 8-bit weights, 24-bit sigma state, 16-bit bias",
                  Recipe(), "onnx2snn/quantize.py, onnx2snn/ir/loihi.py, "
                  "backends/numpy/fixed_point.py"),
    NeuronProfile("nir-zero", "zero", True, False, "binary (NIR IF, v_reset = 0)",
                  "the consumer's (float32 arrays in the file)", ZERO_RECIPE,
                  "backends/nir/export.py, backends/nir/nodes.py"),
    NeuronProfile("nir-subtract", "subtract", True, False,
                  "binary (IF read as nir 1.0.4's: reset by subtraction; --nir-for sinabs)",
                  "the consumer's (float32 arrays in the file)", Recipe(),
                  "backends/nir/export.py, backends/nir/nodes.py"),
    NeuronProfile("nir-exact", "subtract", True, False,
                  "binary (I -> Threshold -> Scale(-θ) -> I loop)",
                  "the consumer's (float32 arrays in the file)", Recipe(),
                  "backends/nir/export.py, backends/nir/nodes.py"),
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
