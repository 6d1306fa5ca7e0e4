"""The nine light models of the onnx package: six convert and match onnxruntime, three are refused.

The light models compute their weights with ConstantOfShape (all ones), which hides mistakes in
the weights' layout; the tests replace them with seeded random initializers (He-scaled, so
activations neither vanish nor explode through 50+ layers), cut the final Softmax (random logits
make it saturate), and compare logits. The three models with LRN are refused listing exactly
their LRN nodes; with ``--drop LRN`` they match onnxruntime on the model with LRN removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnx2snn.cli.main import main
from onnx2snn.errors import UnsupportedModelError
from onnx2snn.frontend import onnx_to_ann
from onnx2snn.frontend.build import node_names
from onnx2snn.frontend.supported_ops import LIGHT_MODELS, light_model_status
from onnx2snn.samples import randomize_weights

CONVERT = ["densenet121", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19"]
REFUSED = ["bvlc_alexnet", "inception_v1", "zfnet512"]
TOL = 1e-4


def input_of(model: onnx.ModelProto) -> tuple[str, list[int]]:
    inits = {t.name for t in model.graph.initializer}
    vi = next(i for i in model.graph.input if i.name not in inits)
    return vi.name, [d.dim_value for d in vi.type.tensor_type.shape.dim]


def compare(model: onnx.ModelProto, ort_run: Any, drop_ops: tuple[str, ...] = (),
            oracle: onnx.ModelProto | None = None) -> float:
    """Max relative error of the converted ``model`` vs onnxruntime on ``oracle`` (or ``model``)."""
    from onnx2snn.ann_executor import run_ann

    graph = onnx_to_ann(model, drop_ops=drop_ops)
    name, shape = input_of(model)
    x = np.random.default_rng(1).uniform(0.0, 1.0, shape).astype(np.float32)
    ref = ort_run(oracle or model, {name: x})[0]
    got = run_ann(graph, x)[graph.outputs[0]]
    del graph
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_the_nine_models_are_there(light_models: Path) -> None:
    assert sorted(p.stem for p in light_models.glob("*.onnx")) == sorted(
        f"light_{n}" for n in CONVERT + REFUSED)
    assert sorted(LIGHT_MODELS) == sorted(CONVERT + REFUSED)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONVERT)
def test_converts_and_matches_onnxruntime(name: str, light_models: Path, ort_run: Any) -> None:
    model = randomize_weights(onnx.load(light_models / f"light_{name}.onnx"))
    err = compare(model, ort_run)
    assert err <= TOL, f"{name}: max relative error {err:.3g}"


@pytest.mark.parametrize("name", REFUSED)
def test_refused_listing_exactly_the_lrn_nodes(name: str, light_models: Path) -> None:
    model = onnx.load(light_models / f"light_{name}.onnx")
    lrn = sorted(n for n, node in zip(node_names(model.graph), model.graph.node)
                 if node.op_type == "LRN")
    assert lrn
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_ann(model)
    assert [(p[0], p[1]) for p in info.value.problems] == [("LRN", n) for n in lrn]


@pytest.mark.slow
@pytest.mark.parametrize("name", REFUSED)
def test_refused_models_match_without_lrn(name: str, light_models: Path, ort_run: Any) -> None:
    """--drop LRN: the rest of AlexNet / ZFNet / Inception v1 matches onnxruntime without LRN."""
    model = randomize_weights(onnx.load(light_models / f"light_{name}.onnx"))
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    for node in plain.graph.node:
        if node.op_type == "LRN":
            node.op_type = "Identity"
            del node.attribute[:]
    with pytest.warns(UserWarning, match="dropped LRN"):
        err = compare(model, ort_run, drop_ops=("LRN",), oracle=plain)
    assert err <= TOL, f"{name} without LRN: max relative error {err:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("name", CONVERT + REFUSED)
def test_inspect_runs_without_traceback(name: str, light_models: Path) -> None:
    """On the files as shipped (ConstantOfShape weights, final Softmax)."""
    result = CliRunner().invoke(main, ["inspect", str(light_models / f"light_{name}.onnx")])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == (0 if name in CONVERT else 4), result.output
    if name in REFUSED:
        assert "LRN" in result.stderr and "converts: no" in result.stdout
    else:
        assert "converts: yes" in result.stdout


@pytest.mark.parametrize("name", CONVERT + REFUSED)
def test_supported_ops_doc_status_agrees(name: str, light_models: Path) -> None:
    """docs/supported_ops.md derives the status from a scan; conversion must agree with it."""
    status = light_model_status(light_models / f"light_{name}.onnx")
    assert status.converts == (name in CONVERT)
    assert status.refused_ops == ([] if name in CONVERT else ["LRN"])
