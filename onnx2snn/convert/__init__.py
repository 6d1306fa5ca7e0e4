"""ANN graph -> calibrated SNN graph: the recipe, calibration, threshold balancing, bias correction."""
