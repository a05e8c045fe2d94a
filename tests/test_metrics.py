"""Metrics: hand-computed values, a from-the-definition reference on random/absent-class/skewed cases, the module's
``val/f1``, and sync across two processes."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from lt_tuning.callbacks import TestMetricsWriter
from lt_tuning.data import LongTailedDataModule
from lt_tuning.metrics import (HeadTailF1, MacroF1, calibration_metrics, head_tail_split, long_tailed_metrics,
                                shot_buckets, tail_to_head_share, top_confusions)
from lt_tuning.models import LongTailedClassifier
from lt_tuning.models.posthoc import choose_posthoc_tau, fit_temperature

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
# macro over 3 present classes: (2/3 + 4/7 + 1/2) / 3 = (73/42) / 3 = 73/126  (the default)
# macro over all 4 classes:     (73/42) / 4 = 73/168
HAND_TARGET = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
HAND_PREDS = torch.tensor([0, 0, 0, 1, 2, 1, 1, 0, 2, 1])


def _fit(metric, preds=HAND_PREDS, target=HAND_TARGET):
    metric.update(preds, target)
    return metric.compute()


def test_hand_example_in_one_shared_state():
    metrics = long_tailed_metrics(4)
    metrics.update(HAND_PREDS[:3], HAND_TARGET[:3])
    metrics.update(HAND_PREDS[3:], HAND_TARGET[3:])
    assert list(metrics.compute_groups.values()) == [["acc", "f1", "head_tail", "per_class_f1"], ["confusion"]]
    out = metrics.compute()
    assert out["acc"].item() == pytest.approx(6 / 10)
    assert out["f1"].item() == pytest.approx(73 / 126)
    assert out["per_class_f1"].tolist() == pytest.approx([2 / 3, 4 / 7, 1 / 2, 0.0])
    # Eval split: support [5, 3, 2, 0], shares .5, .8, 1.0, class 3 in neither group;
    # ratio .65 -> head [0], tail [1, 2]: head_f1 = 2/3, tail_f1 = (4/7 + 1/2) / 2 = 15/28.
    assert out["head_f1"].item() == pytest.approx(2 / 3)
    assert out["tail_f1"].item() == pytest.approx(15 / 28)
    assert _fit(long_tailed_metrics(4, f1_over="all"))["f1"].item() == pytest.approx(73 / 168)


def test_hand_example_head_tail_from_training_counts():
    # Train split [40, 50, 5, 5]: order 1, 0, 2, 3 with running shares .5, .9, .95, 1.0
    # -> head [1], tail [0, 2, 3]: head_f1 = 4/7, tail_f1 = (2/3 + 1/2 + 0) / 3 = 7/18.
    metric = HeadTailF1(4, ratio=0.65, class_counts=[40, 50, 5, 5])
    assert metric.split == ([1], [0, 2, 3])
    out = _fit(metric)
    assert out["head_f1"].item() == pytest.approx(4 / 7)
    assert out["tail_f1"].item() == pytest.approx(7 / 18)


def test_head_tail_empty_group_is_absent_and_an_empty_head_is_explained():
    # counts [1, 1], ratio .5: class 0 reaches share .5, not < .5 -> tail; no head class.
    with pytest.warns(UserWarning, match=r"class 0 alone holds 50.0% of the examples.*ratio 0.5"):
        out = _fit(HeadTailF1(2, ratio=0.5, class_counts=[1, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    # class 0: tp=1 fn=1 -> 2/3; class 1: fp=1 -> 0.
    assert "head_f1" not in out
    assert out["tail_f1"].item() == pytest.approx(1 / 3)
    # One class with 80% of a 3-class evaluated split (the R52-subset case): accuracy 1, no head F1.
    target = torch.tensor([2] * 8 + [0, 1])
    metrics = long_tailed_metrics(3)
    metrics["head_tail"].label_names = ["earn", "acq", "crude"]  # as a module sets them from its DataModule
    with pytest.warns(UserWarning, match=r"class 2 \(crude\) alone holds 80.0% .* above 0.800"):
        out = _fit(metrics, target, target)
    assert out["acc"].item() == 1.0 and out["tail_f1"].item() == 1.0 and "head_f1" not in out
    with pytest.warns(UserWarning, match="before the ``update``"):  # no example at all: both groups empty
        assert HeadTailF1(3).compute() == {}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="class_counts"):
        HeadTailF1(4, class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="'present' or 'all'"):
        MacroF1(4, over="some")


# --- many/medium/few, where the errors go, calibration ----------------------------------------
#
# Confusion matrix of the hand example (rows: true, columns: predicted):
#   0: [3, 1, 1, 0]   1: [1, 2, 0, 0]   2: [0, 1, 1, 0]   3: [0, 0, 0, 0]


def test_shot_buckets_by_training_counts():
    assert shot_buckets([150, 100, 101, 20, 19, 0]) == {"many": [0, 2], "medium": [1, 3], "few": [4, 5]}
    assert shot_buckets([150, 100, 20, 5], thresholds=(50, 10)) == {"many": [0, 1], "medium": [2], "few": [3]}
    with pytest.raises(ValueError, match="few <= many"):
        shot_buckets([1, 2], thresholds=(10, 20))


@pytest.mark.parametrize(("train_counts", "over", "expected"), [
    # many [0], medium [1, 2], few [3]; class 3 is absent from the test split (no target, no prediction)
    ([150, 30, 25, 5], "present", {"many_f1": 2 / 3, "medium_f1": (4 / 7 + 1 / 2) / 2}),
    ([150, 30, 25, 5], "all", {"many_f1": 2 / 3, "medium_f1": (4 / 7 + 1 / 2) / 2, "few_f1": 0.0}),
    # many [0, 1], no medium class, few [2, 3]
    ([150, 130, 10, 5], "present", {"many_f1": (2 / 3 + 4 / 7) / 2, "few_f1": 1 / 2}),
])
def test_shot_f1_hand_example_empty_buckets_are_absent(train_counts, over, expected):
    out = _fit(long_tailed_metrics(4, f1_over=over, train_counts=train_counts))
    assert {k: v.item() for k, v in out.items() if k.endswith(("many_f1", "medium_f1", "few_f1"))} == \
        pytest.approx(expected)
    assert _fit(long_tailed_metrics(4))["f1"].item() == pytest.approx(73 / 126)  # the shared state is unchanged


def test_where_the_errors_go_hand_example():
    confusion = _fit(long_tailed_metrics(4))["confusion"]
    assert confusion.tolist() == [[3, 1, 1, 0], [1, 2, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # head [0], tail [1, 2] (eval split): tail errors 1 -> 0 and 2 -> 1; one of two went to the head.
    assert tail_to_head_share(confusion, [0], [1, 2]) == pytest.approx(1 / 2)
    assert tail_to_head_share(confusion, [0, 1], [2]) == 1.0
    assert tail_to_head_share(confusion, [1, 2], [3]) is None  # no tail error at all
    assert top_confusions(confusion) == [(0, 1, 1), (0, 2, 1), (1, 0, 1), (2, 1, 1)]
    assert top_confusions(confusion, k=2) == [(0, 1, 1), (0, 2, 1)]


# Confidences .9 (bin 13 of 15), .62 (bin 9), .7 (bin 10), .5 (bin 7): one example per bin, so
# ECE = mean |correct - confidence| = (.1 + .38 + .7 + .5) / 4 = .42; class 0's: (.1 + .38) / 2.
ECE_PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.62, 0.28, 0.10], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
ECE_TARGET = torch.tensor([0, 0, 1, 2])


def test_calibration_error_overall_and_per_group_hand_example():
    metrics = calibration_metrics(3, {"head": [0], "rest": [1, 2], "none": []})
    metrics.update(ECE_PROBS[:2], ECE_TARGET[:2])
    metrics.update(ECE_PROBS[2:], ECE_TARGET[2:])
    out = {name: value.item() for name, value in metrics.compute().items()}
    assert out["ece"] == pytest.approx(0.42) and out["head_ece"] == pytest.approx(0.24)
    assert out["rest_ece"] == pytest.approx(0.6)
    assert math.isnan(out["none_ece"])  # no example: NaN, left out of the reports


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_nll():
    generator = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(4000, 5, generator=generator)
    labels = torch.multinomial(true_logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
    overconfident = 3 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    nll = torch.nn.functional.cross_entropy
    assert nll(overconfident / temperature, labels) < nll(overconfident, labels) - 0.1


def test_posthoc_tau_is_the_mildest_with_the_best_dev_macro_f1():
    # Scores = one-hot(label) + log prior (a head-biased model), prior (.8, .2). Subtracting
    # tau * log prior: at tau .25 class 1 scores (-.167, -.207), still wrong; at .5 every example is right.
    prior_log = torch.tensor([0.8, 0.2]).log()
    labels = torch.tensor([0, 0, 0, 1, 1])
    scores = torch.nn.functional.one_hot(labels, 2).float() + prior_log
    assert choose_posthoc_tau(scores, labels, prior_log) == 0.5
    assert choose_posthoc_tau(scores, labels, prior_log, grid=(0.0, 0.25)) == 0.0  # equal F1: the first


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


# --- the definition on random, absent-class and skewed cases ---------------------------------


def _case(name: str) -> tuple[list[int], list[int], int]:
    """(preds, target, num_classes) of a named case."""
    rng = torch.Generator().manual_seed(0)
    if name == "random":  # uniform labels, 40% right
        target = torch.randint(0, 6, (300,), generator=rng)
        preds = torch.where(torch.rand(300, generator=rng) < 0.4, target, torch.randint(0, 6, (300,), generator=rng))
    elif name == "absent":  # 9 classes: 6 and 7 never occur, 8 is only ever predicted by mistake
        target = torch.randint(0, 6, (200,), generator=rng)
        preds = torch.where(torch.rand(200, generator=rng) < 0.7, target, torch.full((200,), 8))
        return preds.tolist(), target.tolist(), 9
    else:  # skewed: long-tailed targets, predictions biased towards the head class
        weights = torch.tensor([40.0, 25, 15, 10, 6, 3, 1])
        target = torch.multinomial(weights, 500, replacement=True, generator=rng)
        preds = torch.where(torch.rand(500, generator=rng) < 0.6, target, torch.zeros(500, dtype=torch.long))
        return preds.tolist(), target.tolist(), 7
    return preds.tolist(), target.tolist(), 6


def _reference_f1(target: list[int], preds: list[int], labels: list[int] | None = None) -> list[float]:
    """Per-class F1 from its definition, 2 tp / (2 tp + fp + fn), 0 where a class has no tp, fp or
    fn; ``labels`` default: the classes in the targets or the predictions (scikit-learn's default)."""
    labels = sorted(set(target) | set(preds)) if labels is None else labels
    f1 = []
    for c in labels:
        tp = sum(t == p == c for t, p in zip(target, preds))
        wrong = sum((t == c) != (p == c) for t, p in zip(target, preds))  # fp + fn
        f1.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return f1


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _reference_head_tail(per_class: list[float], target: list[int], ratio: float) -> tuple[float, float]:
    """The study's split_f1: split on the targets' own frequencies, mean F1 per group."""
    shares = sorted(((target.count(c) / len(target), c) for c in set(target)), key=lambda x: -x[0])
    head, tail, running = [], [], 0.0
    for share, c in shares:
        running += share
        (head if running < ratio else tail).append(per_class[c])
    return sum(head) / len(head), sum(tail) / len(tail)


@pytest.mark.parametrize("case", ["random", "absent", "skewed"])
def test_matches_the_definition(case):
    preds, target, num_classes = _case(case)
    per_class = _reference_f1(target, preds, list(range(num_classes)))
    p, t = torch.tensor(preds), torch.tensor(target)

    out = _fit(long_tailed_metrics(num_classes, ratio=0.55), p, t)
    assert out["acc"].item() == pytest.approx(sum(a == b for a, b in zip(target, preds)) / len(target))
    assert out["f1"].item() == pytest.approx(_mean(_reference_f1(target, preds)))
    assert out["per_class_f1"].tolist() == pytest.approx(per_class)
    assert (out["head_f1"].item(), out["tail_f1"].item()) == pytest.approx(_reference_head_tail(per_class, target, 0.55))
    assert _fit(MacroF1(num_classes, over="all"), p, t).item() == pytest.approx(_mean(per_class))
    if case == "absent":  # 7 of 9 classes occur: the two definitions differ by the factor 7/9
        assert _mean(per_class) == pytest.approx(_mean(_reference_f1(target, preds)) * 7 / 9)


# --- the modules' val/f1 and test/f1 --------------------------------------------------------


class FixedPredictions(LongTailedClassifier):
    """A classifier whose prediction for each example comes with the batch."""

    def class_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.one_hot(batch["pred"], self.num_classes).float()


@pytest.mark.parametrize("f1_over", ["present", "all"])
def test_module_val_f1_is_the_macro_f1(f1_over, tmp_path):
    preds, target, num_classes = _case("absent")
    batches = DataLoader([{"pred": torch.tensor(preds[i : i + 64]), "labels": torch.tensor(target[i : i + 64])}
                          for i in range(0, len(target), 64)], batch_size=None)
    module = FixedPredictions("unused", num_classes=num_classes, f1_over=f1_over)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    val = trainer.validate(module, batches, verbose=False)[0]
    test = trainer.test(module, batches, verbose=False)[0]
    labels = None if f1_over == "present" else list(range(num_classes))
    expected = _mean(_reference_f1(target, preds, labels))
    assert val["val/f1"] == pytest.approx(expected) and test["test/f1"] == pytest.approx(expected)


class FixedTestSplit(LongTailedDataModule):
    """The hand example as a test split with predictions, labels a..d, nothing read or encoded."""

    def setup(self, stage: str | None = None) -> None:
        pass

    def test_dataloader(self) -> DataLoader:
        return DataLoader([{"pred": HAND_PREDS, "labels": HAND_TARGET}], batch_size=None)


@pytest.mark.parametrize(("head_tail_from", "class_counts", "head", "tail", "counts"), [
    ("eval", None, ["a"], ["b", "c"], {"a": 5, "b": 3, "c": 2, "d": 0}),  # d: not in the test split, in neither group
    ("train", [1, 2, 10, 3], ["c"], ["d", "b", "a"], {"c": 10, "d": 3, "b": 2, "a": 1}),
])
def test_test_metrics_json_names_the_head_and_tail_classes_and_the_counts_that_split_them(
        head_tail_from, class_counts, head, tail, counts, tmp_path):
    datamodule = FixedTestSplit("unused", labels=["a", "b", "c", "d"], head_tail_from=head_tail_from)
    module = FixedPredictions("unused", num_classes=4, class_counts=class_counts)
    trainer = pl.Trainer(logger=False, callbacks=[TestMetricsWriter()], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    result = json.loads((tmp_path / "test_metrics.json").read_text(encoding="utf-8"))
    assert result["head_classes"] == head and result["tail_classes"] == tail  # head to tail
    split = "test" if head_tail_from == "eval" else "train"
    assert result["head_tail_counts"] == {"split": split, "counts": counts}
    assert list(result["head_tail_counts"]["counts"]) == list(counts)  # in that order
    assert module.last_test_metrics["test/head_classes"] == [datamodule.label_names.index(c) for c in head]


# --- distributed: two gloo processes on CPU, uneven batch counts ----------------------------

# Rank 0 gets the first 7 examples in 2 batches, rank 1 the other 13 in 3 batches.
DIST_TARGET = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 0])
DIST_PREDS = torch.tensor([0, 0, 1, 1, 0, 2, 2, 0, 0, 0, 1, 0, 1, 2, 1, 2, 0, 4, 4, 0])
DIST_BATCHES = ([slice(0, 3), slice(3, 7)], [slice(7, 12), slice(12, 17), slice(17, 20)])
DIST_TRAIN_COUNTS = [10, 50, 20, 15, 5]
DIST_SHOT_COUNTS = [300, 150, 50, 30, 10]  # many [0, 1], medium [2, 3], few [4]
DIST_PROBS = (torch.arange(100.0).reshape(20, 5).sin() * 3).softmax(dim=-1)  # for the calibration error


def _dist_metrics() -> dict:
    return {"eval_split": long_tailed_metrics(5),
            "train_split": long_tailed_metrics(5, class_counts=DIST_TRAIN_COUNTS, train_counts=DIST_SHOT_COUNTS),
            "calibration": calibration_metrics(5, {"few": [4], "tail": [3, 4]})}


def _compute_all(batches: list[slice]) -> dict[str, torch.Tensor]:
    results = {}
    for name, metrics in _dist_metrics().items():
        for part in batches:
            metrics.update((DIST_PROBS if name == "calibration" else DIST_PREDS)[part], DIST_TARGET[part])
        results.update({f"{name}.{key}": value for key, value in metrics.compute().items()})
    return results


def _dist_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = _compute_all(DIST_BATCHES[rank])
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def test_distributed_sync_equals_single_process(tmp_path):
    expected = _compute_all([slice(None)])
    halves = [_compute_all(DIST_BATCHES[0]), _compute_all(DIST_BATCHES[1])]
    # Averaging per-process values would be wrong for every metric: syncing must sum counts.
    for key, value in expected.items():
        if key in halves[0] and key in halves[1]:  # rank 0 has no few-shot example: no few_f1 of its own
            assert not torch.allclose((halves[0][key] + halves[1][key]) / 2, value.float()), key
    assert "train_split.few_f1" not in halves[0] and expected["train_split.few_f1"] == pytest.approx(2 / 3)

    out_file = tmp_path / "results.pt"
    mp.start_processes(
        _dist_worker,
        args=(2, str(tmp_path / "init"), str(out_file)),
        nprocs=2,
        join=True,
        start_method="fork",  # the children inherit the loaded modules: no re-import
    )
    synced = torch.load(out_file)
    assert synced.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(synced[key], value, msg=key)


def test_a_module_gives_its_metrics_the_datamodules_label_names(tiny_bert_dir):
    from types import SimpleNamespace

    from conftest import prompt_module

    module = prompt_module(tiny_bert_dir)
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(label_names=["a", "b", "c"]))  # as fit attaches it
    module.setup("test")
    assert [stage["head_tail"].label_names for stage in module.metrics.values()] == [["a", "b", "c"]] * 2
