"""The conversion recipe: every knob of ANN-to-SNN conversion, with defaults from the literature.

See DESIGN.md §4. The recipe is stored in the SNN graph's metadata so a converted model says how
it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from onnx2snn.errors import Onnx2SnnError

NORMS = ("percentile", "max", "channel-percentile")
RESETS = ("subtract", "zero")
V0S = ("zero", "half", "calibrated")
MAXPOOLS = ("gate", "avg", "error")


class RecipeError(Onnx2SnnError):
    """A recipe option has a value that does not exist."""

    exit_code = 2


@dataclass(frozen=True)
class Recipe:
    """How to turn an ANN graph into an SNN graph.

    * ``norm``: how each layer's scale λ is read from calibration activations — ``max`` (Diehl
      2015), ``percentile`` of the layer's positive activations (Rueckauer 2017; p = ``percentile``),
      or ``channel-percentile`` (one λ per channel, Kim 2020). A ReLU with a known ceiling
      c (Clip(0, c), ReLU6) bounds λ by it when ``use_ceiling`` is set: λ = min(c, statistic).
    * ``reset``: ``subtract`` (v −= θ, keeps the residue; default) or ``zero`` (v = 0).
    * ``v0``: initial membrane potential ``zero``, ``half`` (θ/2, the half-threshold offset), or
      ``calibrated`` (θ/2, then per neuron corrected on calibration data for ``correction_steps``
      steps; Li et al. 2021).
    * ``maxpool``: ``gate`` (pass the spikes of the most active input), ``avg`` (replace by
      average pooling: changes the function; warned) or ``error``.
    * ``bias_correction``: after conversion, shift each population's bias by the steady-state
      difference between ANN and SNN activations on calibration data (Li et al. 2021, "light"):
      the SNN's mean over the later half of ``correction_steps`` simulated steps, so that the
      transient, which ``v0="calibrated"`` corrects, is not made a constant current.
    * ``gain_calibration``: raise what each channel's spike is worth (``out_scale``, keeping the
      threshold) until its mean output on calibration data meets the ANN's, layer by layer,
      simulating ``correction_steps`` steps: the recipe for reset-to-zero neurons, which lose
      the overshoot of every spike.
    """

    norm: str = "percentile"
    percentile: float = 99.9
    reset: str = "subtract"
    v0: str = "zero"
    maxpool: str = "gate"
    use_ceiling: bool = True
    bias_correction: bool = False
    correction_steps: int = 32
    gain_calibration: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("norm", NORMS), ("reset", RESETS), ("v0", V0S),
                              ("maxpool", MAXPOOLS)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"recipe option {name}={getattr(self, name)!r}: choose one of "
                                  f"{', '.join(allowed)}")
        if not 0.0 < self.percentile <= 100.0:
            raise RecipeError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.correction_steps < 1:
            raise RecipeError("correction_steps must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the SNN graph's metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """Rebuild from ``to_dict`` output, ignoring unknown keys from newer versions."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
