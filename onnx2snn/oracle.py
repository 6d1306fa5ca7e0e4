"""The ANN oracle: onnxruntime running the original ONNX file (our own executor only as a fallback).

``onnxruntime_outputs`` runs the model's chosen output (``output``: the value ``convert`` kept,
recorded in the graph's metadata; by default the first graph output) on a batch. A value that is
not a graph output (the input of a ZipMap) is added as one to an in-memory copy of the model.

When onnxruntime cannot *load* a model the frontend converted (an opset or IR version newer than
the installed onnxruntime knows, e.g. after ``onnx.version_converter`` to the newest opset), the
reference falls back to onnx2snn's own ANN executor on the frontend's graph of the same file
(tested to match onnxruntime op by op), a dropped final Softmax/LogSoftmax re-applied, and says so
in a warning; ``reference_note`` tells ``convert`` up front.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnx2snn.errors import DataError, InputFileError, Onnx2SnnError


def chosen_output(meta: Mapping[str, Any]) -> str | None:
    """The ONNX value a converted graph computes (its metadata's ``output``), None if not one."""
    kept = meta.get("output") or []
    return str(kept[0]) if len(kept) == 1 else None


def estimated_output(meta: Mapping[str, Any]) -> str | None:
    """The ONNX value a converted graph's output estimates, for comparing values with the ANN.

    That is the chosen output (``chosen_output``), except when the frontend dropped a final
    Softmax/LogSoftmax: the SNN's readout then approximates the softmax's *input* (the logits),
    and comparing it with probabilities would mix two scales. With one output and one dropped
    softmax, the softmax's input is returned. Argmax-based figures are the same either way.
    """
    chosen = chosen_output(meta)
    pre = dict(meta.get("pre_softmax") or {})
    kept = meta.get("output") or meta.get("onnx_outputs") or []
    if len(kept) != 1 or len(pre) != 1:
        return chosen
    return str(next(iter(pre.values())))


def _session(model: str | os.PathLike[str], output: str | None) -> tuple[Any, str | None]:
    """An onnxruntime session for ``model`` and the output name to fetch (None: the first)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    path = str(model)
    source: Any = path
    if output is not None:
        import onnx

        proto = onnx.load(path)  # with its external data
        if output not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(output))
            source = proto.SerializeToString()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"]), output


def reference_note(model: str | os.PathLike[str], output: str | None = None) -> str | None:
    """None if onnxruntime loads ``model``; else the sentence saying which reference is used."""
    try:
        _session(model, output)
    except Exception as e:  # onnxruntime raises its own exception types
        return _fallback_note(model, e)
    return None


def _fallback_note(model: str | os.PathLike[str], e: BaseException) -> str:
    import onnxruntime as ort

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # onnxruntime's message starts with a source location; its last sentence says why
    why = [p.strip() for p in first.rstrip(". ").split(". ") if p.strip()][-1][-200:]
    return (f"onnxruntime {ort.__version__} cannot load {os.path.basename(str(model))} "
            f"({why}); the ANN reference is onnx2snn's own ANN executor on the same "
            "file (it matches onnxruntime op by op); install a newer onnxruntime to use it")


def onnxruntime_outputs(model: str | os.PathLike[str], x: np.ndarray,
                        batch_size: int = 256, output: str | None = None) -> np.ndarray:
    """Output ``output`` (default: the first) of the ONNX model on ``x``, by onnxruntime in batches.

    Models exported with a fixed batch size (e.g. 1) are run one fixed-size batch at a time. If
    onnxruntime cannot load the model, the fallback described in the module docstring is used.
    """
    try:
        sess, name = _session(model, output)
    except Exception as e:  # onnxruntime raises its own exception types
        note = _fallback_note(model, e)
        fallback = _executor_outputs(model, x, output, e)
        warnings.warn(note, stacklevel=2)
        return fallback
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or batch_size
    outs = []
    for start in range(0, len(x), step):
        batch = x[start:start + step].astype(np.float32)
        n = len(batch)
        if fixed and n < fixed:
            batch = np.concatenate([batch, np.zeros((fixed - n,) + batch.shape[1:], np.float32)])
        try:
            outs.append(sess.run(None if name is None else [name], {inp.name: batch})[0][:n])
        except Exception as e:
            raise DataError(f"onnxruntime cannot run the model on this data ({e})") from None
    return np.concatenate(outs)


def _executor_outputs(model: str | os.PathLike[str], x: np.ndarray, output: str | None,
                      cause: BaseException) -> np.ndarray:
    """The frontend's ANN graph of ``model`` run by the NumPy executor, as onnxruntime would."""
    from onnx2snn.ann_executor import run_ann
    from onnx2snn.frontend import onnx_to_ann

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = onnx_to_ann(model, output=output)
    except Onnx2SnnError as e:
        raise InputFileError(f"{model}: onnxruntime cannot load the model ({cause}), and "
                             f"onnx2snn's own executor cannot run it either ({e})") from None
    y = np.asarray(run_ann(graph, x.astype(np.float32), dtype=np.float32)[graph.outputs[0]])
    y = y.reshape(len(x), -1)
    dropped = " ".join(graph.meta.get("dropped", []))
    if dropped.startswith(("Softmax", "LogSoftmax")):  # the frontend dropped the final softmax
        z = y - y.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        y = log_p if dropped.startswith("LogSoftmax") else np.exp(log_p)
    return y
