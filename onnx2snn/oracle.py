"""The ANN oracle: onnxruntime running the original ONNX file (never our own executor)."""

from __future__ import annotations

import os

import numpy as np

from onnx2snn.errors import DataError, InputFileError


def onnxruntime_outputs(model: str | os.PathLike[str], x: np.ndarray,
                        batch_size: int = 256) -> np.ndarray:
    """First output of the ONNX model on inputs ``x``, run by onnxruntime in batches.

    Models exported with a fixed batch size (e.g. 1) are run one fixed-size batch at a time.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise InputFileError(f"{model}: onnxruntime cannot load the model ({e})") from None
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
            outs.append(sess.run(None, {inp.name: batch})[0][:n])
        except Exception as e:
            raise DataError(f"onnxruntime cannot run the model on this data ({e})") from None
    return np.concatenate(outs)
