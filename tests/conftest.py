"""Shared fixtures. Tests import the installed ``onnx2snn`` (importlib mode), so helpers shared by
several test modules are fixtures here rather than importable modules.

* ``ort_run`` — run an ONNX model with onnxruntime (the oracle) on a batch.
* ``ann_vs_ort`` — convert a model with the frontend, run the NumPy executor and onnxruntime on the
  same batch, assert they agree; returns the ANN graph.
* ``light_models`` — folder of the onnx package's nine "light" model files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # old models list initializers as inputs: ORT warns per tensor
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got − ref| / max |ref| (absolute when ref is all zeros)."""
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return float(np.abs(np.asarray(got, np.float64) - ref).max()) / (scale or 1.0)


@pytest.fixture(scope="session")
def ort_run() -> Callable[[onnx.ModelProto, dict[str, np.ndarray]], list[np.ndarray]]:
    """``ort_run(model, feeds) -> list of outputs`` with onnxruntime's CPU provider."""
    return _ort_run


@pytest.fixture(scope="session")
def ann_vs_ort() -> Callable[..., Any]:
    """``ann_vs_ort(model, x, tol=1e-5, post=None, drop_ops=())`` -> the converted ANN graph.

    Converts ``model``, runs the NumPy executor (float64) and onnxruntime (float32) on ``x`` and
    asserts max relative error <= ``tol`` for every output (``post`` maps the executor's output
    first, e.g. a softmax the frontend dropped).
    """
    from onnx2snn.ann_executor import run_ann
    from onnx2snn.frontend import onnx_to_ann

    def check(model: onnx.ModelProto, x: np.ndarray, tol: float = 1e-5,
              post: Callable[[np.ndarray], np.ndarray] | None = None,
              drop_ops: tuple[str, ...] = ()) -> Any:
        graph = onnx_to_ann(model, drop_ops=drop_ops)
        name = graph.inputs[0]
        refs = _ort_run(model, {name: x.astype(np.float32)})
        got = run_ann(graph, x.astype(np.float32))
        assert len(graph.outputs) == len(refs)
        for out, ref in zip(graph.outputs, refs):
            y = got[out]
            if post is not None:
                y = post(y)
            assert y.shape == ref.shape, f"output {out}: shape {y.shape}, onnxruntime {ref.shape}"
            err = rel_err(y, ref)
            assert err <= tol, f"output {out}: max relative error {err:.3g} > {tol:g}"
        return graph

    return check


@pytest.fixture(scope="session")
def light_models() -> Path:
    """The folder of the onnx package's light models (AlexNet, VGG-19, ResNet-50, ...)."""
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    if not folder.is_dir():
        pytest.skip(f"the installed onnx has no light models ({folder})")
    return folder


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster started in this test process, as CI would: small (2 CPUs, an 80 MB
    object store, no dashboard); stopped after the module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _lava_equals_reference(q: Any, x: np.ndarray, steps: int) -> None:
    """Run the quantized graph ``q`` in Lava fixed_pt and in the fixed-point reference: every
    population's messages and the integer currents into the readout must be equal at every step,
    and every population must send something (else the comparison proves nothing)."""
    pytest.importorskip("lava")
    from onnx2snn.backends.loihi.network import LavaNetwork
    from onnx2snn.backends.numpy.fixed_point import simulate_fixed
    from onnx2snn.ir.loihi import LoihiNeuron

    pops = [n.name for n in q.nodes if isinstance(n, LoihiNeuron)]
    (out,) = q.outputs
    ref = simulate_fixed(q, x, steps, record=pops + [q[out].inputs[0]])
    with LavaNetwork(q, steps, "fixed_pt") as net:
        got = net.run(x)
    for p in pops:
        # the reference records what the synapses receive (one step later); Lava's sink the send
        np.testing.assert_array_equal(got[p][:-1], ref.recorded[p][1:], err_msg=p)
        assert ref.recorded[p].any(), f"{p} never sends: the test would prove nothing"
    np.testing.assert_array_equal(got[out], ref.recorded[q[out].inputs[0]])


@pytest.fixture(scope="session")
def lava_equals_reference() -> Callable[[Any, np.ndarray, int], None]:
    """``check(q, x, steps)``: Lava fixed_pt equals the fixed-point reference (see above)."""
    return _lava_equals_reference


def _digits_onnx(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str,
                 classes: int = 10) -> onnx.ModelProto:
    """A checked opset-13 model of ``nodes`` from the digits input "x" (N, 1, 8, 8) to "y"."""
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


@pytest.fixture(scope="session")
def digits_onnx() -> Callable[..., onnx.ModelProto]:
    """``make(nodes, initializers, name)``: a model from the digits input "x" to "y" (above)."""
    return _digits_onnx
