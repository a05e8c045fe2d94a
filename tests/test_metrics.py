"""Tests for lt_tuning.metrics: hand-computed values, a loop-based reference, DDP sync."""

from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lt_tuning.metrics import Accuracy, HeadF1, HeadTailF1, MacroF1, PerClassF1, TailF1, head_tail_split

# --- hand-computed example ------------------------------------------------------------------
#
# index:   0  1  2  3  4  5  6  7  8  9
# target:  0  0  0  0  0  1  1  1  2  2
# preds:   0  0  0  1  2  1  1  0  2  1
#
# class 0: tp=3 (0,1,2)  fp=1 (7)    fn=2 (3,4)  F1 = 6 / (6+1+2) = 2/3
# class 1: tp=2 (5,6)    fp=2 (3,9)  fn=1 (7)    F1 = 4 / (4+2+1) = 4/7
# class 2: tp=1 (8)      fp=1 (4)    fn=1 (9)    F1 = 2 / (2+1+1) = 1/2
# class 3: tp=0          fp=0        fn=0        F1 = 0 (no true, no predicted example)
# accuracy = 6/10
# macro over 4 classes:        (2/3 + 4/7 + 1/2 + 0) / 4 = (73/42) / 4 = 73/168
# macro over 3 present classes: (73/42) / 3 = 73/126
HAND_TARGET = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
HAND_PREDS = torch.tensor([0, 0, 0, 1, 2, 1, 1, 0, 2, 1])


def _fit(metric, preds=HAND_PREDS, target=HAND_TARGET):
    metric.update(preds, target)
    return metric.compute()


def test_hand_example_counts_accuracy_f1():
    m = PerClassF1(4)
    f1 = _fit(m)
    assert m.tp.tolist() == [3, 2, 1, 0]
    assert m.fp.tolist() == [1, 2, 1, 0]
    assert m.fn.tolist() == [2, 1, 1, 0]
    assert f1.dtype == torch.float32
    assert f1.tolist() == pytest.approx([2 / 3, 4 / 7, 1 / 2, 0.0])
    assert _fit(Accuracy(4)).item() == pytest.approx(6 / 10)
    assert _fit(MacroF1(4)).item() == pytest.approx(73 / 168)
    assert _fit(MacroF1(4, ignore_absent=True)).item() == pytest.approx(73 / 126)


def test_hand_example_head_tail_eval_vs_train_split():
    # Eval split (class_counts=None): support [5, 3, 2, 0], shares .5, .8, 1.0; class 3 ignored.
    # ratio .65 -> head [0], tail [1, 2]: head_f1 = 2/3, tail_f1 = (4/7 + 1/2) / 2 = 15/28.
    out = _fit(HeadTailF1(4, ratio=0.65))
    assert set(out) == {"head_f1", "tail_f1"}
    assert out["head_f1"].item() == pytest.approx(2 / 3)
    assert out["tail_f1"].item() == pytest.approx(15 / 28)

    # Train split [40, 50, 5, 5]: order 1, 0, 2, 3 with running shares .5, .9, .95, 1.0
    # -> head [1], tail [0, 2, 3]: head_f1 = 4/7, tail_f1 = (2/3 + 1/2 + 0) / 3 = 7/18.
    m = HeadTailF1(4, ratio=0.65, class_counts=[40, 50, 5, 5])
    assert m.split == ([1], [0, 2, 3])
    out = _fit(m)
    assert out["head_f1"].item() == pytest.approx(4 / 7)
    assert out["tail_f1"].item() == pytest.approx(7 / 18)

    assert _fit(HeadF1(4, class_counts=[40, 50, 5, 5])).item() == pytest.approx(4 / 7)
    assert _fit(TailF1(4, class_counts=[40, 50, 5, 5])).item() == pytest.approx(7 / 18)
    assert _fit(HeadF1(4)).item() == pytest.approx(2 / 3)
    assert _fit(TailF1(4)).item() == pytest.approx(15 / 28)


def test_head_tail_empty_group_is_zero():
    # counts [1, 1], ratio .5: class 0 reaches share .5, not < .5 -> tail; no head class.
    out = _fit(HeadTailF1(2, ratio=0.5, class_counts=[1, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    # class 0: tp=1 fn=1 -> 2/3; class 1: fp=1 -> 0.
    assert out["head_f1"].item() == 0.0
    assert out["tail_f1"].item() == pytest.approx(1 / 3)


# --- head_tail_split ------------------------------------------------------------------------


def test_split_hand_example():
    # total 100, shares .5 (head), .8, .9, .95, 1.0 (tail); the zero class is tail.
    assert head_tail_split([50, 30, 10, 5, 5, 0], 0.65) == ([0], [1, 2, 3, 4, 5])
    assert head_tail_split(torch.tensor([50, 30, 10, 5, 5, 0]), 0.65) == ([0], [1, 2, 3, 4, 5])
    assert head_tail_split([50, 30, 10, 5, 5, 0], 0.65, ignore_absent=True) == ([0], [1, 2, 3, 4])


def test_split_ties_order_and_boundary():
    # Ties keep ascending index: order 1, 3, 0, 2 with shares 1/3, 2/3, 5/6, 1.
    assert head_tail_split([5, 10, 5, 10], 0.7) == ([1, 3], [0, 2])
    # Zero classes (not ignored) come last in the tail, in index order.
    assert head_tail_split([0, 3, 0, 1], 0.8) == ([1], [3, 0, 2])
    # A running share equal to the ratio is tail (strict <): shares .5, .75, 1.
    assert head_tail_split([2, 1, 1], 0.75) == ([0], [1, 2])
    assert head_tail_split([1, 2], 1.0) == ([1], [0])


def test_split_real_style_distribution():
    # Long-tailed counts (total 3000): shares .3, .533 (head), .7, .833, ... (tail) at ratio .55.
    counts = [60, 700, 5, 500, 900, 25, 250, 10, 400, 150]
    assert head_tail_split(counts, 0.55) == ([4, 1], [3, 8, 6, 9, 0, 5, 7, 2])
    assert head_tail_split(counts, 0.8) == ([4, 1, 3], [8, 6, 9, 0, 5, 7, 2])


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01])
def test_split_invalid_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        head_tail_split([3, 2], ratio)
    with pytest.raises(ValueError, match="ratio"):
        HeadTailF1(2, ratio=ratio)


def test_split_invalid_counts():
    with pytest.raises(ValueError, match="sum to 0"):
        head_tail_split([0, 0, 0], 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        head_tail_split([3, -1], 0.5)


# --- random cross-check against a loop-based reference --------------------------------------


def _reference(preds: list[int], target: list[int], num_classes: int, ratio: float) -> dict:
    """Counting loops; head/tail as in the reference code, computed on the targets."""
    tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for p, t in zip(preds, target):
        if p == t:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    f1 = []
    for c in range(num_classes):
        denom = 2 * tp[c] + fp[c] + fn[c]
        f1.append(2 * tp[c] / denom if denom else 0.0)
    present = sorted(set(preds) | set(target))

    n = len(target)
    shares = [(c, target.count(c) / n) for c in sorted(set(target))]
    head, tail, acc = [], [], 0.0
    for c, share in sorted(shares, key=lambda x: x[1], reverse=True):
        acc += share
        (head if acc < ratio else tail).append(c)
    return {
        "acc": sum(p == t for p, t in zip(preds, target)) / n,
        "f1": f1,
        "macro": sum(f1) / num_classes,
        "macro_present": sum(f1[c] for c in present) / len(present),
        "head_f1": sum(f1[c] for c in head) / len(head),
        "tail_f1": sum(f1[c] for c in tail) / len(tail),
    }


def test_random_matches_loop_reference():
    rng = random.Random(0)
    num_classes, ratio = 7, 0.55
    # Long-tailed targets; class 6 never a target, predicted only by mistake.
    target = rng.choices(range(6), weights=[40, 25, 15, 10, 6, 4], k=500)
    preds = [t if rng.random() < 0.6 else rng.randrange(num_classes) for t in target]
    ref = _reference(preds, target, num_classes, ratio)
    p, t = torch.tensor(preds), torch.tensor(target)

    assert _fit(Accuracy(num_classes), p, t).item() == pytest.approx(ref["acc"])
    assert _fit(PerClassF1(num_classes), p, t).tolist() == pytest.approx(ref["f1"])
    assert _fit(MacroF1(num_classes), p, t).item() == pytest.approx(ref["macro"])
    assert _fit(MacroF1(num_classes, ignore_absent=True), p, t).item() == pytest.approx(ref["macro_present"])
    out = _fit(HeadTailF1(num_classes, ratio=ratio), p, t)
    assert out["head_f1"].item() == pytest.approx(ref["head_f1"])
    assert out["tail_f1"].item() == pytest.approx(ref["tail_f1"])


# --- accumulation, input formats, validation ------------------------------------------------


def test_two_batches_equal_one_batch():
    for make in (lambda: PerClassF1(4), lambda: MacroF1(4), lambda: HeadTailF1(4)):
        whole, parts = make(), make()
        whole.update(HAND_PREDS, HAND_TARGET)
        parts.update(HAND_PREDS[:3], HAND_TARGET[:3])
        parts.update(HAND_PREDS[3:], HAND_TARGET[3:])
        for name in ("tp", "fp", "fn"):
            assert torch.equal(getattr(whole, name), getattr(parts, name))
        torch.testing.assert_close(whole.compute(), parts.compute())


def test_logits_equal_indices():
    logits = torch.randn(10, 4).scatter(1, HAND_PREDS[:, None], 10.0)
    for make in (lambda: Accuracy(4), lambda: PerClassF1(4), lambda: HeadTailF1(4)):
        torch.testing.assert_close(_fit(make(), logits), _fit(make()))
        torch.testing.assert_close(_fit(make(), logits.softmax(-1)), _fit(make()))


def test_reset_and_empty():
    m = Accuracy(3)
    _fit(m)
    m.reset()
    assert m.tp.tolist() == [0, 0, 0]
    m.update(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert m.compute().item() == 0.0
    h = HeadTailF1(3)
    h.update(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert {k: v.item() for k, v in h.compute().items()} == {"head_f1": 0.0, "tail_f1": 0.0}


def test_invalid_inputs():
    m = MacroF1(4)
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        m.update(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`target` class indices must be in \[0, 4\)"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"`preds` class indices must be in \[0, 4\)"):
        m.update(torch.tensor([-1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_counts"):
        HeadTailF1(4, class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="num_classes"):
        Accuracy(0)


# --- distributed: two gloo processes on CPU -------------------------------------------------

# Rank 0 gets the first 7 examples, rank 1 the other 13.
DIST_TARGET = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 0])
DIST_PREDS = torch.tensor([0, 0, 1, 1, 0, 2, 2, 0, 0, 0, 1, 0, 1, 2, 1, 2, 0, 4, 4, 0])
DIST_SPLIT = 7
DIST_TRAIN_COUNTS = [10, 50, 20, 15, 5]


def _dist_metrics() -> dict:
    return {
        "acc": Accuracy(5),
        "macro": MacroF1(5),
        "macro_present": MacroF1(5, ignore_absent=True),
        "per_class": PerClassF1(5),
        "head_tail_eval": HeadTailF1(5),
        "head_tail_train": HeadTailF1(5, class_counts=DIST_TRAIN_COUNTS),
    }


def _compute_all(preds: torch.Tensor, target: torch.Tensor) -> dict:
    results = {}
    for name, metric in _dist_metrics().items():
        metric.update(preds, target)
        results[name] = metric.compute()
    return results


def _dist_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        part = slice(0, DIST_SPLIT) if rank == 0 else slice(DIST_SPLIT, None)
        results = _compute_all(DIST_PREDS[part], DIST_TARGET[part])
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def _flatten(results: dict) -> dict[str, torch.Tensor]:
    flat = {}
    for name, value in results.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


def test_distributed_sync_equals_single_process(tmp_path):
    expected = _flatten(_compute_all(DIST_PREDS, DIST_TARGET))
    halves = [
        _flatten(_compute_all(DIST_PREDS[:DIST_SPLIT], DIST_TARGET[:DIST_SPLIT])),
        _flatten(_compute_all(DIST_PREDS[DIST_SPLIT:], DIST_TARGET[DIST_SPLIT:])),
    ]
    # Averaging per-process values would be wrong for every metric: syncing must sum counts.
    for key, value in expected.items():
        assert not torch.allclose((halves[0][key] + halves[1][key]) / 2, value), key

    out_file = tmp_path / "results.pt"
    mp.start_processes(
        _dist_worker,
        args=(2, str(tmp_path / "init"), str(out_file)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    synced = _flatten(torch.load(out_file))
    assert synced.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(synced[key], value, msg=key)
