"""Networks the benchmarks run, made at run time (nothing to download, nothing stored).

* ``cifar_resnet18``: ResNet-18 for 32×32×3 inputs (3×3 stem, four stages of two basic blocks,
  64-128-256-512 channels, global average pool, 10 classes; 555 M MACs per image), written with
  ``onnx.helper``, seeded He-normal weights (the second convolution of each block scaled by 1/2
  so that activations stay of order one through the residual sums);
* ``light_resnet50``: the onnx package's light ResNet-50 (224×224×3) with seeded weights
  (``onnx2snn.samples.randomized_light_model``).

Both return (ONNX model, input shape without the batch axis).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def cifar_resnet18(seed: int = 0, classes: int = 10) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A CIFAR-size ResNet-18 with random weights (see the module docstring)."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str,
             gain: float = 1.0) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)) * gain
        b = rng.standard_normal(cout) * 0.05
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name],
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, name=name))
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [x + ".relu"], name=x + ".relu"))
        return x + ".relu"

    h = relu(conv("input", 3, 64, 3, 1, "stem"))
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            p = f"s{stage}b{block}"
            y = relu(conv(h, cin, cout, 3, stride, p + ".c1"))
            y = conv(y, cout, cout, 3, 1, p + ".c2", gain=0.5)
            short = h if stride == 1 and cin == cout else conv(h, cin, cout, 1, stride, p + ".ds")
            nodes.append(helper.make_node("Add", [y, short], [p + ".add"], name=p + ".add"))
            h = relu(p + ".add")
            cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    w = rng.standard_normal((classes, 512)) * np.sqrt(1.0 / 512)
    inits.append(numpy_helper.from_array(w.astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1,
                                  name="fc"))
    graph = helper.make_graph(
        nodes, "cifar_resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model, (3, 32, 32)


def light_resnet50() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """The onnx package's light ResNet-50 with seeded weights."""
    from onnx2snn.samples import randomized_light_model

    return randomized_light_model("resnet50"), (3, 224, 224)


__all__ = ["cifar_resnet18", "light_resnet50"]
