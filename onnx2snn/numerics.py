"""NumPy kernels shared by the ANN executor and the spiking simulator.

All kernels take a leading batch axis and the channel-first layout of ONNX: ``x`` is (B, C, H, W).
They are written for throughput on large batches (the simulator folds time steps into the batch):
convolution is im2col over a strided window view and one matrix product per group (no Python
loop over positions), in batch chunks that bound the column buffer.
Spatial parameters are (height, width) pairs; ``pads`` is (top, left, bottom, right) as in ONNX.
"""

from __future__ import annotations

import numpy as np

_COL_BUDGET = 256 * 2**20  # bytes of im2col buffer per GEMM call


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length along one axis: floor (or ceil) of (size + pads - dilation*(k-1) - 1)/stride + 1."""
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # ONNX/PyTorch rule: the last window must start inside the input or the leading padding.
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
        return out
    return span // stride + 1


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             dilations: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """A read-only view (B, C, OH, OW, KH, KW) of the windows of an already padded ``x``."""
    b, c, _, _ = x.shape
    sb, sc, sh, sw = x.strides
    shape = (b, c, out_hw[0], out_hw[1], kernel[0], kernel[1])
    st = (sb, sc, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1])
    return np.lib.stride_tricks.as_strided(x, shape=shape, strides=st, writeable=False)


def _shifted(xp: np.ndarray, u: int, v: int, strides: tuple[int, int],
             dilations: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """The view xp[..., i*sh + u*dh, j*sw + v*dw] over all output positions (i, j)."""
    r0, c0 = u * dilations[0], v * dilations[1]
    return xp[:, :, r0:r0 + (out_hw[0] - 1) * strides[0] + 1:strides[0],
              c0:c0 + (out_hw[1] - 1) * strides[1] + 1:strides[1]]


def window_reduce(xp: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                  dilations: tuple[int, int], out_hw: tuple[int, int], op: np.ufunc,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Reduce each window of an already padded (B, C, H, W) with ``op`` (np.add or np.maximum).

    Loops over the KH·KW kernel offsets, each a whole-tensor operation, which beats reducing a
    (…, KH, KW) window view for the small kernels of pooling and depthwise convolution.
    ``weights`` (C, KH, KW) multiplies each offset's view per channel first (depthwise conv).
    """
    def term(u: int, v: int) -> np.ndarray:
        view = _shifted(xp, u, v, strides, dilations, out_hw)
        return view if weights is None else view * weights[None, :, u, v, None, None]

    out = np.array(term(0, 0), copy=True)
    for k in range(1, kernel[0] * kernel[1]):
        op(out, term(*divmod(k, kernel[1])), out=out)
    return out


def pad2d(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of (B, C, H, W) by (top, left, bottom, right) with ``value``."""
    t, left, bottom, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, bottom), (left, r)), constant_values=value)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
           strides: tuple[int, int], pads: tuple[int, int, int, int],
           dilations: tuple[int, int], groups: int) -> np.ndarray:
    """Grouped 2-D cross-correlation as ONNX ``Conv`` defines it.

    y[b, o, i, j] = bias[o] + sum_{c, u, v} w[o, c, u, v] * xpad[b, g(o)*Cg + c, i*sh + u*dh, j*sw + v*dw]
    with ``Cg = C / groups`` input channels per group. ``weight`` is (O, Cg, KH, KW); ``bias``
    may also be one per output position (O, OH, OW), bias[o, i, j].
    """
    b, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    xp = pad2d(x, pads)
    oh = conv_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = conv_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    win = _windows(xp, (kh, kw), strides, dilations, (oh, ow))
    wg = weight.reshape(groups, o // groups, cg * kh * kw).astype(x.dtype, copy=False)
    if cg == 1 and o == groups:
        # Depthwise: no matrix product to gain; a weighted sum over the kernel offsets.
        y = window_reduce(xp, (kh, kw), strides, dilations, (oh, ow), np.add,
                          wg.reshape(o, kh, kw))
    else:
        y = np.empty((b, o, oh, ow), dtype=np.result_type(x.dtype, wg.dtype))
        # im2col + one GEMM of the same shape per sample (a stacked matmul), per group and batch
        # chunk; chunks bound the column buffer's memory. One GEMM over the rows of many
        # samples would be faster on small maps, but OpenBLAS rounds a row differently with the
        # number of rows (seen on an AVX-512 CPU: a sample's bits changed with the batch size),
        # and the results must not depend on how calibration or a simulation cuts its batches.
        per_sample = oh * ow * cg * kh * kw * x.itemsize
        step = max(1, _COL_BUDGET // max(per_sample, 1))
        og = o // groups
        for g in range(groups):
            wt = np.ascontiguousarray(wg[g].T)
            for start in range(0, b, step):
                part = win[start:start + step, g * cg:(g + 1) * cg]
                cols = part.transpose(0, 2, 3, 1, 4, 5).reshape(part.shape[0], oh * ow, -1)
                out = np.matmul(cols, wt).reshape(part.shape[0], oh, ow, og)
                y[start:start + step, g * og:(g + 1) * og] = out.transpose(0, 3, 1, 2)
    if bias is not None:  # per output channel (O,), or per output position (O, OH, OW)
        b_ = bias.astype(x.dtype, copy=False)
        y = y + (b_.reshape(1, o, 1, 1) if b_.ndim == 1 else b_[None])
    return y


def merge_groups(weight: np.ndarray, groups: int, f: int) -> np.ndarray:
    """Grouped convolution weights (O, C/groups, KH, KW) with every f consecutive groups merged
    into one: (O, f·C/groups, KH, KW), block-diagonal, so that ``groups // f`` groups compute the
    same convolution (output rows of group g read only g's inputs, local block g mod f).
    f = groups gives the dense weights of groups = 1."""
    o, cg, kh, kw = weight.shape
    og = o // groups
    out = np.zeros((o, cg * f, kh, kw), dtype=weight.dtype)
    for g in range(groups):
        j = g % f
        out[g * og:(g + 1) * og, j * cg:(j + 1) * cg] = weight[g * og:(g + 1) * og]
    return out


def _hw(x: np.ndarray) -> tuple[int, int]:
    """The spatial size (H, W) of an (N, C, H, W) array."""
    return x.shape[2], x.shape[3]


def pool_geometry(hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                  pads: tuple[int, int, int, int], dilations: tuple[int, int],
                  ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Output size of a pooling window and the padding including the extra cells ceil mode reads."""
    out = []
    extra = []
    for axis in range(2):
        pad_total = pads[axis] + pads[axis + 2]
        n = conv_output_size(hw[axis], kernel[axis], strides[axis], pads[axis], pads[axis + 2],
                             dilations[axis], ceil_mode)
        need = (n - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1
        out.append(n)
        extra.append(max(0, need - (hw[axis] + pad_total)))
    full = (pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1])
    return (out[0], out[1]), full


def max_pool2d(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
               pads: tuple[int, int, int, int], dilations: tuple[int, int],
               ceil_mode: bool) -> np.ndarray:
    """ONNX ``MaxPool``: the maximum over each window; padding never wins (it is -inf)."""
    out_hw, full = pool_geometry(_hw(x), kernel, strides, pads, dilations, ceil_mode)
    xp = pad2d(x, full, -np.inf)
    return window_reduce(xp, kernel, strides, dilations, out_hw, np.maximum)


def avg_pool2d(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
               pads: tuple[int, int, int, int], count_include_pad: bool,
               ceil_mode: bool) -> np.ndarray:
    """ONNX ``AveragePool``: window sum / number of counted cells.

    Counted cells are the input cells of the window, plus the explicit padding cells when
    ``count_include_pad``; cells added only by ``ceil_mode`` never count.
    """
    ones = (1, 1)
    out_hw, full = pool_geometry(_hw(x), kernel, strides, pads, ones, ceil_mode)
    total = window_reduce(pad2d(x, full), kernel, strides, ones, out_hw, np.add)
    return total / pool_divisor(_hw(x), kernel, strides, pads, count_include_pad, ceil_mode
                                ).astype(x.dtype)


def pool_divisor(hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int], count_include_pad: bool,
                 ceil_mode: bool) -> np.ndarray:
    """Number of counted cells per output position of an average pool, shape (OH, OW)."""
    ones = (1, 1)
    out_hw, full = pool_geometry(hw, kernel, strides, pads, ones, ceil_mode)
    mask = np.ones((1, 1) + tuple(hw))
    mask = pad2d(mask, pads, 1.0 if count_include_pad else 0.0)
    extra = (0, 0, full[2] - pads[2], full[3] - pads[3])
    mask = pad2d(mask, extra, 0.0)
    return _windows(mask, kernel, strides, ones, out_hw).sum(axis=(-1, -2))[0, 0]
