"""Converters, one function per ONNX op type, grouped by family; importing registers them."""

from onnx2snn.frontend.ops import (  # noqa: F401
    activation,
    elementwise,
    layout,
    linear,
    passthrough,
    pooling,
)
