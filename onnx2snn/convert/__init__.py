"""ANN graph -> calibrated SNN graph: the recipe, calibration, threshold balancing, bias correction."""

from onnx2snn.convert.pipeline import Conversion, convert, convert_ann
from onnx2snn.convert.recipe import Recipe, RecipeError

__all__ = ["Conversion", "Recipe", "RecipeError", "convert", "convert_ann"]
