"""The exporter matrix: the bundled digits nets exported by every framework that installs here, each
file run through ``onnx2snn convert`` and ``onnx2snn evaluate``; prints a Markdown table.

Run it with ``./dev exporter-matrix`` (builds ``.venv-exporters``: Python 3.11, torch 2.13.0 CPU,
onnxscript, skl2onnx, and when they install onnxsim, tensorflow-cpu + tf2onnx, jax + jax2onnx).
The nets are rebuilt in each framework from the bundled ONNX files' trained weights (so every
export computes the same function; each rebuild is checked against onnxruntime on the bundled
file before exporting), except scikit-learn's MLPClassifier, which is trained on the bundled
digits training set in a second. Each framework exports in a child process of this script
(``--export NAME``), so one framework's failure or memory does not touch the others; convert and
evaluate run through the project's own virtualenv (``--onnx2snn``), exactly as a user runs them.

Columns: the exporter, the net, the ONNX opset, the files written (``+data``: weights in an
external file), the layout of the data the model takes, convert's and evaluate's result, the
ANN's test accuracy (onnxruntime on the exported file) and the SNN's at T=32 (numpy backend,
default recipe), and the first line of any error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FRAMEWORKS = ("torch", "onnx", "sklearn", "keras", "jax")
T = 32


# -- the bundled nets' weights ------------------------------------------------------------------
def bundled(name: str) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(MODELS / f"{name}.onnx"))
    return {t.name: numpy_helper.to_array(t).copy() for t in m.graph.initializer}


def bundled_logits(name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.astype(np.float32)})[0]


def check_rebuild(what: str, got: np.ndarray, net: str, x: np.ndarray) -> None:
    """A rebuilt net must compute the bundled file's logits (else the export proves nothing)."""
    want = bundled_logits(net, x)
    err = float(np.abs(np.asarray(got).reshape(want.shape) - want).max())
    if err > 1e-3:
        raise RuntimeError(f"{what}: rebuilt {net} differs from the bundled file by {err:.3g}")


def digits(split: str) -> tuple[np.ndarray, np.ndarray | None]:
    z = np.load(MODELS / f"digits_{split}.npz")
    return z["x"].astype(np.float32), (z["y"] if "y" in z.files else None)


def entry(exporter: str, net: str, path: Path, layout: str, **kw: Any) -> dict[str, Any]:
    return {"exporter": exporter, "net": net, "file": str(path), "layout": layout, **kw}


def attempt(rows: list[dict[str, Any]], exporter: str, net: str, path: Path, layout: str,
            export: Callable[[], Any]) -> None:
    """Run one export call; a row for the file, or for the export's error (the matrix goes on)."""
    try:
        export()
        rows.append(entry(exporter, net, path, layout))
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines() or ["failed"]
        rows.append(entry(exporter, net, path, layout, export_error=last[-1][:200]))
    except Exception as e:  # report, do not stop the matrix
        rows.append(entry(exporter, net, path, layout, export_error=_first_line(e)))


# -- PyTorch ------------------------------------------------------------------------------------
def export_torch(work: Path) -> list[dict[str, Any]]:
    import torch
    from torch import nn

    torch.set_num_threads(2)
    w = bundled("digits_cnn")
    cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(128, 64), nn.ReLU(),
                        nn.Linear(64, 10))
    cnn.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=False)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64),
                        nn.ReLU(), nn.Linear(64, 10))
    mlp.load_state_dict({k: torch.from_numpy(v) for k, v in bundled("digits_mlp").items()})
    resnet = _torch_resnet()
    resnet.load_state_dict({k: torch.from_numpy(v) for k, v in bundled("digits_resnet").items()},
                           strict=False)
    x, _ = digits("test")
    out = []
    for net, model in (("digits_mlp", mlp), ("digits_cnn", cnn), ("digits_resnet", resnet)):
        model.eval()
        with torch.no_grad():
            check_rebuild("torch", model(torch.from_numpy(x)).numpy(), net, x)
        example = (torch.from_numpy(x[:2]),)
        legacy = work / f"torch_legacy_{net}.onnx"
        torch.onnx.export(model, example, str(legacy), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        out.append(entry("torch.onnx.export(dynamo=False)", net, legacy, "NCHW"))
        for opset in (9, 11, 13):  # older opsets: the legacy exporter still writes them
            path = work / f"torch_legacy_opset{opset}_{net}.onnx"
            attempt(out, f"torch.onnx.export(dynamo=False, opset_version={opset})", net, path,
                    "NCHW", lambda p=path, o=opset, m=model, ex=example: torch.onnx.export(
                        m, ex, str(p), dynamo=False, opset_version=o,
                        input_names=["input"], output_names=["logits"],
                        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}))
        dyn = work / "dynamo" / net / "model.onnx"
        dyn.parent.mkdir(parents=True, exist_ok=True)

        def dynamo(m: Any = model, p: Path = dyn, ex: Any = example) -> None:
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(m, ex, dynamo=True, input_names=["input"],
                                        output_names=["logits"], dynamic_shapes=({0: batch},))
            program.save(str(p), external_data=True)  # what the dynamo exporter's users get

        attempt(out, "torch.onnx.export(dynamo=True)", net, dyn, "NCHW", dynamo)
    try:
        import onnxsim

        for net in ("digits_mlp", "digits_cnn", "digits_resnet"):
            import onnx

            simplified, ok = onnxsim.simplify(onnx.load(str(work / f"torch_legacy_{net}.onnx")))
            path = work / f"onnxsim_{net}.onnx"
            onnx.save(simplified, str(path))
            out.append(entry("torch legacy + onnxsim.simplify", net, path, "NCHW"))
    except ImportError:
        out.append({"exporter": "onnxsim", "net": "-", "export_error": "onnxsim not installed"})
    return out


def _torch_resnet() -> Any:
    """digits_resnet (BatchNorm, MaxPool, residual sums) as models/make_digits_models.py builds it."""
    from torch import nn

    def conv_bn_relu(c_in: int, c_out: int) -> Any:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU())

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int):
            super().__init__()
            self.body = nn.Sequential(conv_bn_relu(c_in, c_out),
                                      nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(c_out))
            self.skip = nn.Identity() if c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.skip(x))

    return nn.Sequential(conv_bn_relu(1, 16), Block(16, 16), nn.MaxPool2d(2), Block(16, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


# -- onnx.version_converter ----------------------------------------------------------------------
def export_onnx(work: Path) -> list[dict[str, Any]]:
    import onnx
    from onnx import version_converter

    out = []
    for net in ("digits_mlp", "digits_cnn", "digits_resnet"):
        for opset in (21, 23, onnx.defs.onnx_opset_version()):  # it cannot down-convert BN
            path = work / f"opset{opset}_{net}.onnx"
            attempt(out, f"onnx.version_converter → {opset}", net, path, "NCHW",
                    lambda p=path, o=opset, n=net: onnx.save(version_converter.convert_version(
                        onnx.load(str(MODELS / f"{n}.onnx")), o), str(p)))
    return out


# -- scikit-learn -----------------------------------------------------------------------------
def export_sklearn(work: Path) -> list[dict[str, Any]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    x, y = digits("train")
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=0)
    clf.fit(x.reshape(len(x), -1), y)
    out = []
    for zipmap in (False, True):
        path = work / f"skl2onnx_mlp_zipmap{int(zipmap)}.onnx"
        model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 64]))],
                                options={id(clf): {"zipmap": zipmap}}, target_opset=17)
        path.write_bytes(model.SerializeToString())
        out.append(entry(f"skl2onnx MLPClassifier (zipmap={zipmap})", "sklearn_mlp", path, "flat"))
    return out


# -- Keras 3 / TensorFlow -----------------------------------------------------------------------
def _keras_cnn(channels: int) -> Any:
    import keras

    w = bundled("digits_cnn")
    eps = 1e-5
    model = keras.Sequential([
        keras.Input((8, 8, channels)),
        keras.layers.Conv2D(16, 3, padding="same"), keras.layers.BatchNormalization(epsilon=eps),
        keras.layers.ReLU(), keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(32, 3, padding="same"), keras.layers.BatchNormalization(epsilon=eps),
        keras.layers.ReLU(), keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    k0 = np.repeat(w["0.weight"], channels, axis=1) / channels  # gray replicated to RGB
    model.layers[0].set_weights([k0.transpose(2, 3, 1, 0), w["0.bias"]])
    model.layers[1].set_weights([w["1.weight"], w["1.bias"], w["1.running_mean"],
                                 w["1.running_var"]])
    model.layers[4].set_weights([w["4.weight"].transpose(2, 3, 1, 0), w["4.bias"]])
    model.layers[5].set_weights([w["5.weight"], w["5.bias"], w["5.running_mean"],
                                 w["5.running_var"]])
    # Keras flattens (H, W, C); the bundled Gemm reads (C, H, W)
    dense = w["9.weight"].reshape(64, 32, 2, 2).transpose(2, 3, 1, 0).reshape(128, 64)
    model.layers[9].set_weights([dense, w["9.bias"]])
    model.layers[10].set_weights([w["11.weight"].T, w["11.bias"]])
    return model


def _keras_mlp() -> Any:
    import keras

    w = bundled("digits_mlp")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    for layer, k in zip(model.layers[1:], (1, 3, 5)):
        layer.set_weights([w[f"{k}.weight"].T, w[f"{k}.bias"]])
    return model


def export_keras(work: Path) -> list[dict[str, Any]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf2onnx

    x, _ = digits("test")
    out = []
    nets = (("digits_mlp", _keras_mlp(), 1, "NHWC"), ("digits_cnn", _keras_cnn(1), 1, "NHWC"),
            ("digits_cnn_rgb", _keras_cnn(3), 3, "NHWC-rgb"))
    for net, model, channels, layout in nets:
        xin = np.repeat(x.transpose(0, 2, 3, 1), channels, axis=3)
        check_rebuild("keras", model.predict(xin, verbose=0),
                      "digits_cnn" if net.startswith("digits_cnn") else net, x)
        spec = (tf.TensorSpec((None, 8, 8, channels), tf.float32, name="input"),)
        # the documented Keras 2 call (fails with Keras 3), from_function on the model's call,
        # Keras 3's own ONNX export, and a SavedModel through the tf2onnx command line
        fn = tf.function(lambda t, m=model: m(t, training=False), input_signature=spec)
        saved = work / f"saved_{net}"
        routes = [
            ("tf2onnx.convert.from_keras", "tf2onnx_from_keras",
             lambda p, m=model, s=spec: tf2onnx.convert.from_keras(
                 m, input_signature=s, opset=17, output_path=str(p))),
            ("tf2onnx.convert.from_function", "tf2onnx_from_function",
             lambda p, f=fn, s=spec: tf2onnx.convert.from_function(
                 f, input_signature=s, opset=17, output_path=str(p))),
            ('model.export(format="onnx")', "keras_export_onnx",
             lambda p, m=model: m.export(str(p), format="onnx", verbose=False)),
            ("model.export() + python -m tf2onnx.convert", "tf2onnx_cli",
             lambda p, m=model, d=saved: (m.export(str(d), verbose=False), subprocess.run(
                 [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(d), "--output",
                  str(p), "--opset", "17"], check=True, capture_output=True, text=True)))]
        for name, stem, export in routes:
            path = work / f"{stem}_{net}.onnx"
            attempt(out, name, net, path, layout, lambda e=export, p=path: e(p))
    return out


# -- JAX through jax2onnx -----------------------------------------------------------------------
def export_jax(work: Path) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    from jax2onnx import to_onnx

    jax.config.update("jax_platforms", "cpu")
    w = {k: jnp.asarray(v) for k, v in bundled("digits_cnn").items()}
    m = {k: jnp.asarray(v) for k, v in bundled("digits_mlp").items()}
    eps = 1e-5

    def conv_bn_relu(x: Any, i: int, j: int) -> Any:  # NHWC, like a Flax nnx.Conv + BatchNorm
        k = jnp.transpose(w[f"{i}.weight"], (2, 3, 1, 0))
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y + w[f"{i}.bias"]
        y = (y - w[f"{j}.running_mean"]) / jnp.sqrt(w[f"{j}.running_var"] + eps)
        return jax.nn.relu(y * w[f"{j}.weight"] + w[f"{j}.bias"])

    def avg_pool(x: Any) -> Any:
        s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return s / 4.0

    def cnn(x: Any) -> Any:
        y = avg_pool(conv_bn_relu(avg_pool(conv_bn_relu(x, 0, 1)), 4, 5))
        y = jnp.transpose(y, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # the bundled (C, H, W) order
        y = jax.nn.relu(y @ w["9.weight"].T + w["9.bias"])
        return y @ w["11.weight"].T + w["11.bias"]

    def cnn_nhwc_flatten(x: Any) -> Any:  # Flax's usual x.reshape(B, -1) on NHWC
        y = avg_pool(conv_bn_relu(avg_pool(conv_bn_relu(x, 0, 1)), 4, 5))
        dense = w["9.weight"].reshape(64, 32, 2, 2).transpose(0, 2, 3, 1).reshape(64, 128)
        y = jax.nn.relu(y.reshape(x.shape[0], -1) @ dense.T + w["9.bias"])
        return y @ w["11.weight"].T + w["11.bias"]

    def mlp(x: Any) -> Any:
        y = x.reshape(x.shape[0], -1)
        y = jax.nn.relu(y @ m["1.weight"].T + m["1.bias"])
        y = jax.nn.relu(y @ m["3.weight"].T + m["3.bias"])
        return y @ m["5.weight"].T + m["5.bias"]

    x, _ = digits("test")
    out = []
    nets = [("jax function", "digits_mlp", mlp, 1), ("jax function, lax.reduce_window pooling",
                                                     "digits_cnn", cnn, 1),
            ("jax function, lax.reduce_window pooling", "digits_cnn_nhwc_flatten",
             cnn_nhwc_flatten, 1),
            ("flax.nnx", "digits_cnn", _flax_cnn(1), 1), ("flax.nnx", "digits_cnn_rgb",
                                                          _flax_cnn(3), 3)]
    for how, net, fn, channels in nets:
        xh = np.repeat(x.transpose(0, 2, 3, 1), channels, axis=3)
        ref = "digits_mlp" if net == "digits_mlp" else "digits_cnn"
        check_rebuild("jax", np.asarray(fn(jnp.asarray(xh))), ref, x)
        layout = "NHWC-rgb" if channels == 3 else "NHWC"
        path = work / f"jax2onnx_{how.split()[0].replace('.', '_')}_{net}.onnx"
        attempt(out, f"jax2onnx.to_onnx ({how})", net, path, layout,
                lambda f=fn, p=path, c=channels, n=net: p.write_bytes(to_onnx(
                    f, [("B", 8, 8, c)], model_name=n, opset=21).SerializeToString()))
    return out


def _flax_cnn(channels: int) -> Any:
    """digits_cnn as a Flax nnx module (NHWC), from the bundled weights."""
    import jax.numpy as jnp
    from flax import nnx

    w = bundled("digits_cnn")

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv0 = nnx.Conv(channels, 16, (3, 3), padding="SAME", rngs=rngs)
            self.bn0 = nnx.BatchNorm(16, use_running_average=True, epsilon=1e-5, rngs=rngs)
            self.conv1 = nnx.Conv(16, 32, (3, 3), padding="SAME", rngs=rngs)
            self.bn1 = nnx.BatchNorm(32, use_running_average=True, epsilon=1e-5, rngs=rngs)
            self.fc0 = nnx.Linear(128, 64, rngs=rngs)
            self.fc1 = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            x = nnx.avg_pool(nnx.relu(self.bn0(self.conv0(x))), window_shape=(2, 2),
                             strides=(2, 2))
            x = nnx.avg_pool(nnx.relu(self.bn1(self.conv1(x))), window_shape=(2, 2),
                             strides=(2, 2))
            x = x.reshape(x.shape[0], -1)  # Flax flattens (H, W, C)
            return self.fc1(nnx.relu(self.fc0(x)))

    m = CNN(nnx.Rngs(0))
    k0 = np.repeat(w["0.weight"], channels, axis=1) / channels
    m.conv0.kernel.value = jnp.asarray(k0.transpose(2, 3, 1, 0))
    m.conv0.bias.value = jnp.asarray(w["0.bias"])
    m.conv1.kernel.value = jnp.asarray(w["4.weight"].transpose(2, 3, 1, 0))
    m.conv1.bias.value = jnp.asarray(w["4.bias"])
    for bn, i in ((m.bn0, 1), (m.bn1, 5)):
        bn.scale.value, bn.bias.value = jnp.asarray(w[f"{i}.weight"]), jnp.asarray(w[f"{i}.bias"])
        bn.mean.value = jnp.asarray(w[f"{i}.running_mean"])
        bn.var.value = jnp.asarray(w[f"{i}.running_var"])
    dense = w["9.weight"].reshape(64, 32, 2, 2).transpose(2, 3, 1, 0).reshape(128, 64)
    m.fc0.kernel.value, m.fc0.bias.value = jnp.asarray(dense), jnp.asarray(w["9.bias"])
    m.fc1.kernel.value = jnp.asarray(w["11.weight"].T)
    m.fc1.bias.value = jnp.asarray(w["11.bias"])
    return m


EXPORTERS = {"torch": export_torch, "onnx": export_onnx, "sklearn": export_sklearn,
             "keras": export_keras, "jax": export_jax}


def _first_line(e: BaseException | str) -> str:
    text = str(e).strip() or type(e).__name__ if isinstance(e, BaseException) else str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "failed"
    return (f"{type(e).__name__}: " if isinstance(e, BaseException) else "") + line[:200]


# -- running the files through onnx2snn ----------------------------------------------------------
def data_files(work: Path) -> dict[str, tuple[Path, Path]]:
    """Calibration and test data in every layout an export takes."""
    cx, _ = digits("calib")
    tx, ty = digits("test")
    layouts = {"NCHW": lambda a: a, "flat": lambda a: a.reshape(len(a), -1),
               "NHWC": lambda a: a.transpose(0, 2, 3, 1),
               "NHWC-rgb": lambda a: np.repeat(a.transpose(0, 2, 3, 1), 3, axis=3)}
    out = {}
    for name, f in layouts.items():
        calib, test = work / f"calib_{name}.npz", work / f"test_{name}.npz"
        np.savez(calib, x=f(cx))
        np.savez(test, x=f(tx), y=ty)
        out[name] = (calib, test)
    return out


def _version(cli: str) -> str:
    r = subprocess.run([cli, "--version"], capture_output=True, text=True)
    return r.stdout.strip()


def run_onnx2snn(cli: str, e: dict[str, Any], data: dict[str, tuple[Path, Path]],
                 work: Path) -> dict[str, Any]:
    """convert + evaluate one exported file; fills the row's result fields."""
    import onnx

    path = Path(e["file"])
    header = onnx.load(str(path), load_external_data=False)
    e["opset"] = next((o.version for o in header.opset_import if o.domain in ("", "ai.onnx")), "")
    e["files"] = "+data" if any(p != path and p.name.startswith(path.name)
                                for p in path.parent.iterdir()) else "one"
    calib, test = data[e["layout"]]
    out = work / "out" / f"{path.parent.name}_{path.stem}"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    t0 = time.time()
    r = subprocess.run([cli, "convert", str(path), "--calib", str(calib), "-o", str(out), "-q"],
                       capture_output=True, text=True, env=env)
    e["convert"] = "ok" if r.returncode == 0 else f"exit {r.returncode}"
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("onnx2snn: warning: output")]
    if notes:
        e["note"] = "scores chosen, label branch pruned"
    if r.returncode != 0:
        e["error"] = _error_line(r.stderr)
        return e
    r = subprocess.run([cli, "evaluate", str(out), "--data", str(test), "-T", str(T), "--json",
                        "-q"], capture_output=True, text=True, env=env)
    e["evaluate"] = "ok" if r.returncode == 0 else f"exit {r.returncode}"
    if r.returncode != 0:
        e["error"] = _error_line(r.stderr)
        return e
    result = json.loads(r.stdout)
    e["ann"] = result["ann_accuracy"]
    e["snn"] = result["results"][-1]["accuracy"]
    if any("own ANN executor" in n for n in result.get("notes", [])):
        e["note"] = "ANN reference: onnx2snn executor (onnxruntime cannot load it)"
    e["seconds"] = round(time.time() - t0, 1)
    return e


def _error_line(stderr: str) -> str:
    """onnx2snn's error message (with the lines that list the nodes), on one line."""
    lines = stderr.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("onnx2snn: error:")), None)
    if start is None:
        return " ".join(stderr.split())[-220:]
    text = lines[start].removeprefix("onnx2snn: error: ")
    for ln in lines[start + 1:]:
        if not ln.startswith(" "):
            break
        text += " " + ln.strip()
    return " ".join(text.split())[:300]


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def table(rows: list[dict[str, Any]]) -> str:
    head = ["exporter", "net", "opset", "files", "data layout", "convert", "evaluate",
            "ANN (onnxruntime)", f"SNN T={T}", "Δ pp", "note / error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in rows:
        if e.get("export_error"):
            cells = [e["exporter"], e["net"], "-", "-", e.get("layout", "-"), "export failed", "-",
                     "-", "-", "-", e["export_error"]]
        else:
            ann, snn = e.get("ann"), e.get("snn")
            delta = "-" if ann is None or snn is None else f"{100 * (snn - ann):+.2f}"
            cells = [e["exporter"], e["net"], str(e.get("opset", "")), e.get("files", ""),
                     e["layout"], e.get("convert", "-"), e.get("evaluate", "-"), _pct(ann),
                     _pct(snn), delta, e.get("error") or e.get("note", "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxscript", "onnxsim", "scikit-learn",
                "skl2onnx", "tensorflow-cpu", "keras", "tf2onnx", "jax", "jax2onnx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _project_versions(cli: str) -> str:
    python = Path(cli).parent / "python"
    code = ("from importlib import metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('onnx', 'onnxruntime', 'numpy')))")
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx2snn", default="onnx2snn", help="the onnx2snn command to run")
    ap.add_argument("--only", default=",".join(FRAMEWORKS),
                    help=f"comma-separated frameworks ({', '.join(FRAMEWORKS)})")
    ap.add_argument("--work", default=None, help="folder for the exported files (default: temp)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    ap.add_argument("--export", default=None, help=argparse.SUPPRESS)  # child: one framework
    args = ap.parse_args()
    if args.export:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(EXPORTERS[args.export](work)))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="onnx2snn-exporters-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for fw in [f.strip() for f in args.only.split(",") if f.strip()]:
        print(f"exporting with {fw} ...", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, __file__, "--export", fw, "--work", str(work / fw)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or ["failed"]
            rows.append({"exporter": fw, "net": "-", "export_error": last[0][:200]})
            continue
        rows += json.loads(r.stdout.strip().splitlines()[-1])
    data = data_files(work)
    for e in rows:
        if not e.get("export_error"):
            print(f"  {e['exporter']}: {Path(e['file']).name}", file=sys.stderr, flush=True)
            run_onnx2snn(args.onnx2snn, e, data, work)
    print(f"## Exporter matrix ({time.strftime('%Y-%m-%d')}, {_version(args.onnx2snn)}, "
          f"{time.time() - t0:.0f} s)\n")
    print("exporters: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "\n")
    print(f"onnx2snn's venv: {_project_versions(args.onnx2snn)}\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
