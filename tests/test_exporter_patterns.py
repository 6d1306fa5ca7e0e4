"""What real exporters write, rebuilt with ``onnx.helper`` from the bundled nets' trained weights.

Each pattern reproduces one exporter's habit (docs/exporters.md): PyTorch dynamo's external data,
Keras/JAX channels-last inputs with Transposes around every op, a Relu between a layout Transpose
and the Flatten (jax2onnx), a scikit-learn classifier's label branch and ZipMap (skl2onnx), an
opset newer than onnxruntime runs (``onnx.version_converter``), tf2onnx's Reshape / shape
arithmetic, jax2onnx's Squeeze/Unsqueeze, BatchNorm fused or kept, opsets 9-23. Every one is
checked against onnxruntime on the same file; the end-to-end ones go through the CLI (convert,
evaluate, emit) on the digits test set, where the SNN at T=32 must stay within 2 pp of the ANN.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2snn.cli.main import main
from onnx2snn.errors import UnsupportedModelError
from onnx2snn.frontend import onnx_to_ann, source_copy
from onnx2snn.frontend.source_copy import has_external_data
from onnx2snn.oracle import onnxruntime_outputs

MODELS = Path(__file__).resolve().parents[1] / "models"
TEST = np.load(MODELS / "digits_test.npz")
CALIB = np.load(MODELS / "digits_calib.npz")


def weights(name: str) -> dict[str, np.ndarray]:
    m = onnx.load(str(MODELS / f"{name}.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def make(nodes: list[onnx.NodeProto], x_shape: list[Any], outputs: list[onnx.ValueInfoProto],
         inits: dict[str, np.ndarray], opset: int = 17,
         extra_opsets: tuple[tuple[str, int], ...] = ()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])
    tensors = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(helper.make_graph(nodes, "pattern", [x], outputs, tensors),
                          opset_imports=ops, producer_name="test_exporter_patterns")
    m.ir_version = helper.find_min_ir_version_for(ops)
    onnx.checker.check_model(m, full_check=True)
    return m


def logits_out(name: str = "logits", n: int = 10) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", n])


def node(op: str, ins: list[str], out: str, **attrs: Any) -> onnx.NodeProto:
    domain = attrs.pop("domain", "")
    return helper.make_node(op, ins, [out], name=out, domain=domain, **attrs)


NCHW, NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _nhwc_stage(conv: int, bn: int, x: str, k: str) -> list[onnx.NodeProto]:
    """Conv → BN → Transpose(NHWC) → Relu → Transpose(NCHW) → AvgPool, tf2onnx style."""
    return [node("Conv", [x, f"{conv}.weight", f"{conv}.bias"], f"c{k}", pads=[1, 1, 1, 1]),
            node("BatchNormalization", [f"c{k}"] + [f"{bn}.{p}" for p in (
                "weight", "bias", "running_mean", "running_var")], f"bn{k}"),
            node("Transpose", [f"bn{k}"], f"to_nhwc{k}", perm=NHWC),
            node("Relu", [f"to_nhwc{k}"], f"r{k}"),
            node("Transpose", [f"r{k}"], f"to_nchw{k}", perm=NCHW),
            node("AveragePool", [f"to_nchw{k}"], f"p{k}", kernel_shape=[2, 2], strides=[2, 2])]


def cnn_nhwc_rgb() -> onnx.ModelProto:
    """digits_cnn as tf2onnx writes a Keras NHWC model before its optimizer: 3-channel NHWC input,
    a Transpose around every Conv/pool, Relu between two Transposes, Transpose(0,2,3,1) before the
    Flatten. Channel k of the input gets 1/3 of the trained kernel, so gray data replicated to RGB
    gives the trained net's logits."""
    w = weights("digits_cnn")
    inits = {k: v for k, v in w.items() if not k.startswith(("0.weight", "9.weight"))}
    inits["0.weight"] = np.repeat(w["0.weight"], 3, axis=1) / 3
    # the Gemm reads the pooled (2, 2, 32) map in H, W, C order: permute its columns to match
    inits["9.weight"] = w["9.weight"].reshape(64, 32, 2, 2).transpose(0, 2, 3, 1).reshape(64, 128)
    inits["flat"] = np.array([-1, 128], np.int64)
    nodes = [node("Transpose", ["x"], "t0", perm=NCHW)]
    nodes += _nhwc_stage(0, 1, "t0", "0") + _nhwc_stage(4, 5, "p0", "1") + [
        node("Transpose", ["p1"], "t_flat", perm=NHWC),
        node("Reshape", ["t_flat", "flat"], "f"),
        node("Gemm", ["f", "9.weight", "9.bias"], "g0", transB=1),
        node("Relu", ["g0"], "r2"),
        node("Gemm", ["r2", "11.weight", "11.bias"], "logits", transB=1)]
    return make(nodes, [8, 8, 3], [logits_out()], inits)


def mlp_sklearn(zipmap: bool) -> onnx.ModelProto:
    """digits_mlp as skl2onnx writes an MLPClassifier: MatMul/Add layers, Softmax → Identity →
    probabilities, the label branch ArgMax → ArrayFeatureExtractor → Reshape → Cast, and with
    zipmap on a ZipMap of the probabilities instead of the tensor output."""
    w = weights("digits_mlp")
    inits = {f"W{i}": w[f"{k}.weight"].T.copy() for i, k in enumerate((1, 3, 5))}
    inits.update({f"b{i}": w[f"{k}.bias"] for i, k in enumerate((1, 3, 5))})
    inits["classes"] = np.arange(10, dtype=np.int64)
    inits["shape"] = np.array([-1], np.int64)
    nodes = []
    h = "x"
    for i in range(3):
        nodes += [node("MatMul", [h, f"W{i}"], f"mm{i}"), node("Add", [f"mm{i}", f"b{i}"], f"a{i}")]
        h = f"a{i}"
        if i < 2:
            nodes.append(node("Relu", [h], f"r{i}"))
            h = f"r{i}"
    nodes += [node("Softmax", [h], "out_activations_result", axis=1),
              node("Identity", ["out_activations_result"], "probabilities"),
              node("ArgMax", ["out_activations_result"], "argmax", axis=1),
              node("ArrayFeatureExtractor", ["classes", "argmax"], "afe", domain="ai.onnx.ml"),
              node("Reshape", ["afe", "shape"], "reshaped"),
              node("Cast", ["reshaped"], "label", to=TensorProto.INT64)]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])]
    if zipmap:
        nodes.append(node("ZipMap", ["probabilities"], "output_probability",
                          classlabels_int64s=list(range(10)), domain="ai.onnx.ml"))
        value = helper.make_tensor_type_proto(TensorProto.FLOAT, [])
        outputs.append(helper.make_value_info("output_probability", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, value))))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                     ["N", 10]))
    return make(nodes, [64], outputs, inits, extra_opsets=(("ai.onnx.ml", 1),))


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def convert_and_evaluate(tmp_path: Path, model: str | Path, calib: np.ndarray, x: np.ndarray,
                         *extra: str) -> tuple[dict[str, Any], Any, Any]:
    np.savez(tmp_path / "calib.npz", x=calib)
    np.savez(tmp_path / "test.npz", x=x, y=TEST["y"])
    out = tmp_path / "out"
    conv = invoke("convert", model, "--calib", tmp_path / "calib.npz", "-o", out, "-q", *extra)
    assert conv.exit_code == 0, conv.output
    ev = invoke("evaluate", out, "--data", tmp_path / "test.npz", "-T", "32", "--json", "-q")
    assert ev.exit_code == 0, ev.output
    return json.loads(ev.stdout), conv, ev


def assert_close_to_ann(result: dict[str, Any]) -> None:
    ann = result["ann_accuracy"]
    snn = result["results"][-1]["accuracy"]
    assert ann is not None and ann > 0.9, result
    assert abs(snn - ann) <= 0.02, f"SNN {snn:.4f} vs ANN {ann:.4f} at T=32"


def rgb_nhwc(x: np.ndarray) -> np.ndarray:
    return np.repeat(x.transpose(0, 2, 3, 1), 3, axis=3)


# -- 1. external data (PyTorch dynamo) -------------------------------------------------------------
@pytest.mark.slow
def test_external_data_model_converts_evaluates_and_emits(tmp_path: Path) -> None:
    src = tmp_path / "export"
    src.mkdir()
    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    onnx.save(model, str(src / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    assert has_external_data(onnx.load(str(src / "model.onnx"), load_external_data=False))
    # --v0 zero: the folder is re-emitted for NIR below, whose neurons have no initial state
    result, _, _ = convert_and_evaluate(tmp_path, src / "model.onnx", CALIB["x"], TEST["x"],
                                        "--v0", "zero")
    assert_close_to_ann(result)
    copy = onnx.load(str(tmp_path / "out" / "source.onnx"), load_external_data=False)
    assert not has_external_data(copy), "OUT/source.onnx must carry its weights"
    # the folder works without the original: move the export away, then emit and evaluate again
    (src / "model.onnx.data").rename(tmp_path / "elsewhere.data")
    emitted = invoke("emit", tmp_path / "out", "--target", "nir", "-o", tmp_path / "nir")
    assert emitted.exit_code == 0, emitted.output
    assert not has_external_data(onnx.load(str(tmp_path / "nir" / "source.onnx"),
                                           load_external_data=False))
    ev = invoke("evaluate", tmp_path / "nir", "--data", tmp_path / "test.npz", "-T", "8", "-q")
    assert ev.exit_code == 0 and "ANN accuracy (onnxruntime): 9" in ev.output, ev.output


def test_source_copy_over_the_protobuf_limit_keeps_one_data_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ort_run: Any) -> None:
    model = onnx.load(str(MODELS / "digits_mlp.onnx"))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    monkeypatch.setattr(source_copy, "PROTOBUF_LIMIT", 0)  # as if the model were over 2 GB
    (tmp_path / "out").mkdir()
    files = source_copy.copy_source_model(tmp_path / "m.onnx", tmp_path / "out" / "source.onnx")
    assert [f.name for f in files] == ["source.onnx", "source.onnx.data"]
    x = TEST["x"][:4]
    want = ort_run(onnx.load(str(MODELS / "digits_mlp.onnx")), {"input": x})[0]
    (tmp_path / "w.bin").unlink()  # the copy must not need the original's data file
    got = onnxruntime_outputs(files[0], x)
    np.testing.assert_array_equal(got, want)


# -- 2, 3. channels-last inputs and Transposes around per-element ops --------------------------------
def test_nhwc_rgb_input_keeps_its_layout_and_matches_onnxruntime(ann_vs_ort: Any) -> None:
    model = cnn_nhwc_rgb()
    x = rgb_nhwc(TEST["x"][:16])
    graph = ann_vs_ort(model, x, tol=1e-4)
    first = graph.nodes[1]
    assert graph[graph.inputs[0]].shape == (8, 8, 3)
    assert first.kind == "transpose" and first.shape == (3, 8, 8) and first.origin == ("t0",)
    assert graph.meta["input_layouts"]["x"]["layout"] == "NHWC"
    # the Relus between Transposes stay per-element ops, the last Transpose ends in the weights
    assert [n.kind for n in graph.nodes].count("transpose") == 1
    assert "channel_permute" not in [n.kind for n in graph.nodes]


@pytest.mark.slow
def test_nhwc_rgb_model_converts_and_evaluates_on_nhwc_data(tmp_path: Path) -> None:
    onnx.save(cnn_nhwc_rgb(), str(tmp_path / "keras.onnx"))
    result, _, _ = convert_and_evaluate(tmp_path, tmp_path / "keras.onnx",
                                        rgb_nhwc(CALIB["x"]), rgb_nhwc(TEST["x"]))
    assert_close_to_ann(result)


def test_nhwc_input_is_refused_clearly_by_loihi_and_nir(tmp_path: Path) -> None:
    onnx.save(cnn_nhwc_rgb(), str(tmp_path / "keras.onnx"))
    np.savez(tmp_path / "calib.npz", x=rgb_nhwc(CALIB["x"][:32]))
    for target in ("nir", "loihi"):
        r = invoke("convert", tmp_path / "keras.onnx", "--calib", tmp_path / "calib.npz", "-o",
                   tmp_path / target, "-q", "--target", target)
        assert r.exit_code != 0 and "transpose node 't0/layout'" in r.stderr, r.output
        assert "re-export the model with an NCHW input" in r.stderr, r.stderr
        assert not (tmp_path / target).exists()


def _jax_style(relu_then: str) -> onnx.ModelProto:
    """jax2onnx: Conv → Transpose(0,2,3,1) → Relu → (Mul) → Reshape → Gemm, NCHW input."""
    rng = np.random.default_rng(1)
    inits = {"w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
             "b": rng.normal(size=4).astype(np.float32),
             "s": rng.uniform(0.5, 2, size=4).astype(np.float32),
             "g": rng.normal(size=(5, 4 * 4 * 4)).astype(np.float32),
             "flat": np.array([-1, 64], np.int64)}
    nodes = [node("Conv", ["x", "w", "b"], "conv"),
             node("Transpose", ["conv"], "to_nhwc", perm=[0, 2, 3, 1]),
             node("Relu", ["to_nhwc"], "relu")]
    last = "relu"
    if relu_then == "mul":  # a per-channel scale in NHWC: broadcast on the last axis
        nodes.append(node("Mul", ["relu", "s"], "scale"))
        last = "scale"
    if relu_then == "conv":  # a Conv reading the NHWC tensor as NCHW: a real spatial move
        inits["w2"] = rng.normal(size=(3, 6, 1, 1)).astype(np.float32)
        inits["g"] = rng.normal(size=(5, 3 * 4 * 4)).astype(np.float32)
        inits["flat"] = np.array([-1, 48], np.int64)
        nodes.append(node("Conv", ["relu", "w2"], "conv2"))
        last = "conv2"
    nodes += [node("Reshape", [last, "flat"], "flatten"),
              node("Gemm", ["flatten", "g"], "y", transB=1)]
    return make(nodes, [2, 6, 6], [logits_out("y", 5)], inits)


@pytest.mark.parametrize("then", ["relu", "mul"])
def test_transpose_moves_through_per_element_ops_into_dense(then: str, ann_vs_ort: Any) -> None:
    x = np.random.default_rng(2).normal(size=(5, 2, 6, 6))
    graph = ann_vs_ort(_jax_style(then), x)
    kinds = [n.kind for n in graph.nodes]
    assert "transpose" not in kinds and "channel_permute" not in kinds, kinds


def test_transpose_into_a_conv_is_refused_naming_the_transpose() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_ann(_jax_style("conv"))
    problems = info.value.problems
    assert [(op, name) for op, name, _ in problems] == [("Transpose", "to_nhwc")], problems
    assert "before conv2" in problems[0][2] and "export without this Transpose" in problems[0][2]


# -- 4. scikit-learn classifiers ------------------------------------------------------------------
@pytest.mark.parametrize("zipmap", [False, True])
def test_sklearn_label_branch_is_pruned_and_scores_picked(zipmap: bool, recwarn: Any) -> None:
    model = mlp_sklearn(zipmap)
    graph = onnx_to_ann(model)
    assert graph.meta["output"] == ["probabilities"]
    assert "label" in graph.meta["pruned_outputs"]
    assert any("Softmax" in d for d in graph.meta["dropped"])
    note = graph.meta["output_note"]
    assert "'probabilities'" in note and "ArgMax → ArrayFeatureExtractor" in note
    assert any(note in str(w.message) for w in recwarn)
    if not zipmap:  # the executor + softmax equals onnxruntime's probabilities output
        ann = onnx_to_ann(model, output="probabilities")
        assert ann.meta["pruned_outputs"] == ["label"]


def test_output_option_chooses_and_rejects_unknown_names(tmp_path: Path) -> None:
    model = mlp_sklearn(False)
    with pytest.warns(UserWarning, match="'a1' chosen with --output; pruned 'label'"):
        graph = onnx_to_ann(model, output="a1")  # an inner value: layer 2's pre-activation
    assert graph.meta["output"] == ["a1"] and graph[graph.outputs[0]].shape == (64,)
    onnx.save(model, str(tmp_path / "skl.onnx"))
    r = invoke("inspect", "--output", "nope", tmp_path / "skl.onnx")
    assert r.exit_code == 3 and "no such value" in r.stderr and "probabilities" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("zipmap", [False, True])
def test_sklearn_classifier_converts_and_evaluates(zipmap: bool, tmp_path: Path) -> None:
    onnx.save(mlp_sklearn(zipmap), str(tmp_path / "skl.onnx"))
    x = TEST["x"].reshape(len(TEST["x"]), 64)
    result, conv, _ = convert_and_evaluate(tmp_path, tmp_path / "skl.onnx",
                                           CALIB["x"].reshape(-1, 64), x)
    assert "pruned the post-processing output(s) 'label'" in conv.stderr
    assert_close_to_ann(result)
    manifest = json.loads((tmp_path / "out" / "onnx2snn.json").read_text())
    assert manifest["output"] == "probabilities"
    inspect = invoke("inspect", tmp_path / "skl.onnx", "--output", "probabilities")
    assert inspect.exit_code == 0 and "dropped terminal softmax: Softmax" in inspect.output


# -- 5. opsets newer than onnxruntime ------------------------------------------------------------
def _newest_opset_cnn() -> onnx.ModelProto:
    from onnx import version_converter

    return version_converter.convert_version(onnx.load(str(MODELS / "digits_cnn.onnx")),
                                             onnx.defs.onnx_opset_version())


def _ort_loads(model: onnx.ModelProto) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_opset_newer_than_onnxruntime_falls_back_to_own_executor(tmp_path: Path) -> None:
    model = _newest_opset_cnn()
    if _ort_loads(model):
        # the installed onnxruntime runs the newest opset: state it as newer than it knows
        model.opset_import[0].version = onnx.defs.onnx_opset_version()
        model.ir_version = onnx.IR_VERSION + 1
        assert not _ort_loads(model), "cannot make a model onnxruntime refuses"
    onnx.save(model, str(tmp_path / "new.onnx"))
    result, conv, ev = convert_and_evaluate(tmp_path, tmp_path / "new.onnx", CALIB["x"],
                                            TEST["x"])
    assert "cannot load new.onnx" in conv.stderr and "own ANN executor" in conv.stderr
    assert "own ANN executor" in ev.stderr and "own ANN executor" in " ".join(result["notes"])
    assert result["ann_reference"] == "onnx2snn executor"
    assert_close_to_ann(result)
    manifest = json.loads((tmp_path / "out" / "onnx2snn.json").read_text())
    assert manifest["ann_reference"] == "onnx2snn executor"


def test_fallback_reference_equals_onnxruntime_on_the_same_net(tmp_path: Path) -> None:
    from onnx2snn.oracle import _executor_outputs

    path = MODELS / "digits_cnn.onnx"
    x = TEST["x"][:32]
    ort_y = onnxruntime_outputs(path, x)
    own = _executor_outputs(path, x, None, RuntimeError("test"))
    np.testing.assert_allclose(own, ort_y, rtol=1e-4, atol=1e-4)
    skl = tmp_path / "skl.onnx"
    onnx.save(mlp_sklearn(False), str(skl))
    xs = x.reshape(32, 64)
    np.testing.assert_allclose(_executor_outputs(skl, xs, "probabilities", RuntimeError("t")),
                               onnxruntime_outputs(skl, xs, output="probabilities"),
                               rtol=1e-4, atol=1e-5)


# -- 6. patterns that converted in the trial and must stay so ----------------------------------------
def _cnn_body(w: dict[str, np.ndarray], x: str, keep_bn: bool = False) -> list[onnx.NodeProto]:
    """digits_cnn from (N, 1, 8, 8) value ``x`` to logits; ``keep_bn``: BatchNorm after the Relu
    (not foldable into the Conv: kept as an affine map)."""
    return [node("Conv", [x, "0.weight", "0.bias"], "c0", pads=[1, 1, 1, 1]),
            node("BatchNormalization", ["c0", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var"], "bn0"),
            node("Relu", ["bn0"], "r0"),
            node("AveragePool", ["r0"], "p0", kernel_shape=[2, 2], strides=[2, 2]),
            node("Conv", ["p0", "4.weight", "4.bias"], "c1", pads=[1, 1, 1, 1]),
            node("BatchNormalization", ["c1", "5.weight", "5.bias", "5.running_mean",
                                        "5.running_var"], "bn1"),
            node("Relu", ["bn1"], "r1"),
            node("AveragePool", ["r1"], "p1", kernel_shape=[2, 2], strides=[2, 2])] + (
        [node("BatchNormalization", ["p1", "5.weight", "5.bias", "5.running_mean",
                                     "5.running_var"], "bn_kept")] if keep_bn else [])


def _head(x: str) -> list[onnx.NodeProto]:
    return [node("Gemm", [x, "9.weight", "9.bias"], "g0", transB=1), node("Relu", ["g0"], "r2"),
            node("Gemm", ["r2", "11.weight", "11.bias"], "logits", transB=1)]


def test_tf2onnx_reshape_single_channel_and_shape_arithmetic(ann_vs_ort: Any) -> None:
    """(N, 8, 8) input → Reshape(-1, 1, 8, 8); Flatten as Shape → Gather → Cast → Slice →
    Concat → Reshape, tf2onnx style."""
    w = weights("digits_cnn")
    inits = dict(w, to4=np.array([-1, 1, 8, 8], np.int64), zero=np.array(0, np.int64),
                 minus1=np.array([-1], np.int64), s0=np.array([0], np.int64),
                 s1=np.array([1], np.int64))
    nodes = [node("Reshape", ["x", "to4"], "x4")] + _cnn_body(w, "x4") + [
        node("Shape", ["p1"], "shape"),
        node("Gather", ["shape", "zero"], "n", axis=0),
        node("Cast", ["n"], "n64", to=TensorProto.INT64),
        node("Unsqueeze", ["n64", "s0"], "n1"),
        node("Slice", ["shape", "s0", "s1"], "n_sliced"),
        node("Concat", ["n_sliced", "minus1"], "target", axis=0),
        node("Reshape", ["p1", "target"], "flat")] + _head("flat")
    graph = ann_vs_ort(make(nodes, [8, 8], [logits_out()], inits), TEST["x"][:16, 0], tol=1e-4)
    assert graph[graph.inputs[0]].shape == (8, 8)


def test_jax2onnx_squeeze_unsqueeze(ann_vs_ort: Any) -> None:
    """(N, 8, 8) input → Unsqueeze(axis 1); (N, 32, 1, 1)-style Squeeze before the head."""
    w = weights("digits_cnn")
    inits = dict(w, ax1=np.array([1], np.int64), flat=np.array([-1, 128, 1], np.int64),
                 ax2=np.array([2], np.int64))
    nodes = [node("Unsqueeze", ["x", "ax1"], "x4")] + _cnn_body(w, "x4") + [
        node("Reshape", ["p1", "flat"], "f3"), node("Squeeze", ["f3", "ax2"], "flat2")] + \
        _head("flat2")
    ann_vs_ort(make(nodes, [8, 8], [logits_out()], inits), TEST["x"][:16, 0], tol=1e-4)


@pytest.mark.parametrize("keep_bn", [False, True])
def test_batchnorm_fused_or_kept(keep_bn: bool, ann_vs_ort: Any) -> None:
    w = weights("digits_cnn")
    inits = dict(w, flat=np.array([-1, 128], np.int64))
    last = "bn_kept" if keep_bn else "p1"
    nodes = _cnn_body(w, "x", keep_bn) + [node("Reshape", [last, "flat"], "f")] + _head("f")
    graph = ann_vs_ort(make(nodes, [1, 8, 8], [logits_out()], inits), TEST["x"][:16], tol=1e-4)
    assert [n.kind for n in graph.nodes].count("affine") == (1 if keep_bn else 0)


@pytest.mark.parametrize("opset", [9, 11, 13, 15, 17, 19, 21, 23])
def test_bundled_cnn_at_opsets_9_to_23(opset: int, ann_vs_ort: Any) -> None:
    w = weights("digits_cnn")
    nodes = _cnn_body(w, "x") + [node("Flatten", ["p1"], "f")] + _head("f")
    graph = ann_vs_ort(make(nodes, [1, 8, 8], [logits_out()], w, opset=opset), TEST["x"][:16],
                       tol=1e-4)
    assert graph.meta["opset"] == opset


def test_identity_and_float_casts_after_softmax_keep_it_final(ann_vs_ort: Any) -> None:
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(size=(4, 3)).astype(np.float32)}
    nodes = [node("MatMul", ["x", "w"], "z"), node("Softmax", ["z"], "p", axis=-1),
             node("Cast", ["p"], "p64", to=TensorProto.DOUBLE),
             node("Cast", ["p64"], "p32", to=TensorProto.FLOAT),
             node("Identity", ["p32"], "probs")]
    model = make(nodes, [4], [logits_out("probs", 3)], inits, opset=13)

    def softmax(y: np.ndarray) -> np.ndarray:
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    graph = ann_vs_ort(model, rng.normal(size=(6, 4)), post=softmax)
    assert graph.meta["dropped"] and graph.meta["pruned_outputs"] == []


def test_independent_heads_are_all_kept() -> None:
    rng = np.random.default_rng(4)
    inits = {"w": rng.normal(size=(4, 3)).astype(np.float32),
             "v": rng.normal(size=(4, 2)).astype(np.float32)}
    nodes = [node("MatMul", ["x", "w"], "a"), node("MatMul", ["x", "v"], "b")]
    graph = onnx_to_ann(make(nodes, [4], [logits_out("a", 3), logits_out("b", 2)], inits))
    assert graph.meta["output"] == ["a", "b"] and len(graph.outputs) == 2


def test_rescaling_before_the_layout_transpose_keeps_the_input_layout(ann_vs_ort: Any) -> None:
    """Keras' Rescaling layer runs on the NHWC input before tf2onnx's Transpose."""
    rng = np.random.default_rng(5)
    inits = {"half": np.array(0.5, np.float32), "w": rng.normal(size=(4, 3, 3, 3)).astype(
        np.float32), "g": rng.normal(size=(2, 4 * 4 * 4)).astype(np.float32),
        "flat": np.array([-1, 64], np.int64)}
    nodes = [node("Mul", ["x", "half"], "rescale"),
             node("Transpose", ["rescale"], "to_nchw", perm=NCHW),
             node("Conv", ["to_nchw", "w"], "conv"), node("Relu", ["conv"], "relu"),
             node("Reshape", ["relu", "flat"], "f"), node("Gemm", ["f", "g"], "y", transB=1)]
    model = make(nodes, [6, 6, 3], [logits_out("y", 2)], inits)
    graph = ann_vs_ort(model, rng.normal(size=(4, 6, 6, 3)))
    assert [n.kind for n in graph.nodes][:3] == ["input", "affine", "transpose"]
    assert graph.meta["input_layouts"]["x"]["layout"] == "NHWC"
