"""``load_dataset``: the .npz/.npy formats, shape checks against the model, and refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from onnx2snn.data import Dataset, load_dataset
from onnx2snn.errors import DataError, InputFileError

SHAPE = (1, 2, 3)


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_with_labels(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float64).reshape(4, *SHAPE)
    ds = load_dataset(npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 1])), SHAPE)
    assert isinstance(ds, Dataset) and len(ds) == 4
    assert ds.x.dtype == np.float32 and ds.x.flags.c_contiguous and ds.x.shape == (4, *SHAPE)
    assert np.array_equal(ds.x, x) and ds.y.tolist() == [0, 1, 2, 1]
    assert ds.source == str(tmp_path / "d.npz")


def test_npy_of_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((3, *SHAPE), np.float32))
    ds = load_dataset(tmp_path / "x.npy", SHAPE)
    assert ds.y is None and ds.x.shape == (3, *SHAPE)


def test_flat_samples_are_reshaped_to_the_model_input(tmp_path: Path) -> None:
    x = np.arange(12).reshape(2, 6)
    ds = load_dataset(npz(tmp_path / "d.npz", x=x), SHAPE)
    assert ds.x.shape == (2, *SHAPE)
    assert np.array_equal(ds.x.reshape(2, 6), x)  # C order kept


def test_no_shape_given_keeps_the_file_shape(tmp_path: Path) -> None:
    assert load_dataset(npz(tmp_path / "d.npz", x=np.zeros((5, 7)))).x.shape == (5, 7)


def test_limit_takes_the_first_samples(tmp_path: Path) -> None:
    x, y = np.arange(10.0)[:, None], np.arange(10)
    ds = load_dataset(npz(tmp_path / "d.npz", x=x, y=y), limit=3)
    assert ds.x[:, 0].tolist() == [0, 1, 2] and ds.y.tolist() == [0, 1, 2]
    assert len(load_dataset(tmp_path / "d.npz", limit=100)) == 10
    assert len(ds.head(None)) == 3 and len(ds.head(1)) == 1


def test_content_decides_the_format_not_the_suffix(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 6)))
    shutil.copy(tmp_path / "a.npy", tmp_path / "a_really_npy.npz")
    npz(tmp_path / "b.npz", x=np.zeros((3, 6)), y=np.array([1, 2, 3]))
    shutil.copy(tmp_path / "b.npz", tmp_path / "b_really_npz.npy")
    assert len(load_dataset(tmp_path / "a_really_npy.npz", SHAPE)) == 2
    assert load_dataset(tmp_path / "b_really_npz.npy", SHAPE).y.tolist() == [1, 2, 3]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such data file"),
    ("folder", "no such data file"),
    ("no_x", r"no array 'x' \(it has: inputs, y\)"),
    ("empty_npz", r"no array 'x' \(it has: nothing\)"),
    ("not_numpy", "not a readable"),
    ("truncated", "not a readable"),
    ("pickled", "Python objects .pickled data., which onnx2snn never loads"),
    ("pickle_file", "Python objects"),
    ("empty_samples", r"shape \(4, 0\): each sample is empty"),
    ("bool", "not real-valued"),
    ("negative_label", "label -1 of sample 2 is not a class index >= 0"),
    ("huge_header", "declares shape .* more than this machine's memory"),
    ("compressed_damaged", "not a readable .npz/.npy file"),
    ("scalar", "no samples"),
    ("zero_samples", "no samples"),
    ("strings", "not real-valued"),
    ("complex", "not real-valued"),
    ("wrong_shape", r"samples have shape \(5,\), the model expects \(1, 2, 3\)"),
    ("y_length", r"'y' must have shape \(4,\)"),
    ("y_float", "integer class labels"),
    ("nan", "1 NaN or infinite"),
    ("inf", "2 NaN or infinite"),
    ("overflow", "NaN or infinite value.*float32"),
])
def test_bad_files_raise_one_data_error(tmp_path: Path, case: str, message: str) -> None:
    p = tmp_path / f"{case}.npz"
    x = np.zeros((4, 6))
    if case == "folder":
        p.mkdir()
    elif case == "no_x":
        npz(p, inputs=x, y=np.zeros(4, int))
    elif case == "empty_npz":
        npz(p)
    elif case == "not_numpy":
        p.write_text("x,y\n1,2\n")
    elif case == "truncated":
        npz(p, x=x)
        p.write_bytes(p.read_bytes()[:40])
    elif case == "pickled":
        np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        p = tmp_path / "o.npy"
    elif case == "pickle_file":
        import pickle
        p.write_bytes(pickle.dumps({"x": x}))
    elif case == "empty_samples":
        npz(p, x=np.zeros((4, 0)))
    elif case == "bool":
        npz(p, x=x > 0)
    elif case == "negative_label":
        npz(p, x=x, y=np.array([0, 1, -1, 2]))
    elif case == "huge_header":
        np.save(tmp_path / "h.npy", np.zeros((4, 6), np.float32))
        data = (tmp_path / "h.npy").read_bytes().replace(b"(4, 6)", b"(4000000000000, 6)", 1)
        p = tmp_path / "h.npy"
        p.write_bytes(data)
    elif case == "compressed_damaged":
        np.savez_compressed(p, x=np.random.default_rng(0).random((40, 6)))
        data = p.read_bytes()
        p.write_bytes(data[:200] + b"\xff" * 8 + data[208:])
    elif case == "scalar":
        npz(p, x=np.float32(1))
    elif case == "zero_samples":
        npz(p, x=np.zeros((0, 6)))
    elif case == "strings":
        npz(p, x=np.array([["a"] * 6] * 4))
    elif case == "complex":
        npz(p, x=x + 1j)
    elif case == "wrong_shape":
        npz(p, x=np.zeros((4, 5)))
    elif case == "y_length":
        npz(p, x=x, y=np.zeros(3, int))
    elif case == "y_float":
        npz(p, x=x, y=np.zeros(4))
    elif case in ("nan", "inf"):
        x[1, 2] = np.nan if case == "nan" else np.inf
        if case == "inf":
            x[3, 0] = -np.inf
        npz(p, x=x)
    elif case == "overflow":
        npz(p, x=np.full((4, 6), 1e300))
    with pytest.raises(DataError, match=message) as info:
        load_dataset(p, SHAPE)
    assert isinstance(info.value, InputFileError) and info.value.exit_code == 3
    assert str(p) in str(info.value)
    assert "\n" not in str(info.value)


def test_labels_must_be_class_indices_of_the_model(tmp_path: Path) -> None:
    npz(tmp_path / "d.npz", x=np.zeros((3, 6)), y=np.array([0, 9, 10]))
    with pytest.raises(DataError, match=r"label 10 of sample 2 is not a class index 0..9 "
                                        r"\(the model has 10 outputs\)"):
        load_dataset(tmp_path / "d.npz", SHAPE, n_classes=10)
    assert load_dataset(tmp_path / "d.npz", SHAPE, n_classes=11).y.tolist() == [0, 9, 10]
