"""The smallest T within 0.5 / 1 pp of the ANN, read from finished accuracy-vs-T rows."""

from __future__ import annotations

from onnx2snn.evaluate import EvalRow, smallest_t_within


def rows(accs: dict[int, float | None]) -> list[EvalRow]:
    return [EvalRow(t, a, None, None, 0.0, 0.0) for t, a in accs.items()]


def test_first_t_from_which_accuracy_stays_within_each_margin() -> None:
    r = rows({32: 0.990, 1: 0.50, 4: 0.980, 8: 0.9925, 16: 0.996})
    # ANN 0.997: within 1 pp from T=8 on; within 0.5 pp only from T=16 on (T=32 is 0.7 pp below)
    assert smallest_t_within(r, 0.997) == {"0.5": None, "1": 8}
    assert smallest_t_within(r, 0.994) == {"0.5": 8, "1": 8}


def test_a_dip_after_reaching_the_ann_line_moves_the_answer_later() -> None:
    r = rows({4: 0.99, 8: 0.90, 16: 0.99})
    assert smallest_t_within(r, 0.99) == {"0.5": 16, "1": 16}


def test_exactly_at_the_margin_counts() -> None:
    r = rows({1: 0.98, 2: 0.985, 4: 0.99})
    assert smallest_t_within(r, 0.99, (0.5, 1.0)) == {"0.5": 2, "1": 1}


def test_no_ann_or_no_labels_gives_none() -> None:
    assert smallest_t_within(rows({1: 0.9}), None) == {"0.5": None, "1": None}
    assert smallest_t_within(rows({1: None}), 0.9) == {"0.5": None, "1": None}
