"""Head-to-tail figures: bar heights, class order, boundary, weight norms, the CLI's PNGs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT, SHARED_DATA, VERBALIZER, prompt_module, require_split, write_cmid_run
from lt_tuning import (
    ClsTuningModule,
    CMIDDataModule,
    PlotWriter,
    PromptTuningModule,
    class_distribution_figure,
    per_class_f1_figure,
    weight_norms_figure,
)
from lt_tuning.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Total 106; by count (ties: lower index first) 1, 3, 6, 5, 0, 2, 4. Running shares 0.47, 0.66,
# 0.85...: with ratio 0.8 classes 1 and 3 are head, and the 20-20 tie of 3 and 6 straddles the line.
COUNTS = [5, 50, 3, 20, 0, 8, 20]
ORDER, N_HEAD = [1, 3, 6, 5, 0, 2, 4], 2
NAMES = ["a", "b", "c", "d", "e", "f", "g"]


def bars(container) -> list[tuple[float, float]]:
    """(centre x, height) of each bar of a bar series."""
    return [(patch.get_x() + patch.get_width() / 2, patch.get_height()) for patch in container]


def boundary_x(ax) -> float:
    (line,) = ax.lines
    x0, x1 = line.get_xdata()
    assert x0 == x1  # vertical
    return x0


def test_class_distribution_bars_are_sorted_counts_split_at_the_boundary():
    ax = class_distribution_figure(COUNTS, 0.8, NAMES).axes[0]
    head, tail = ax.containers
    assert bars(head) == [(0, 50), (1, 20)]
    assert bars(tail) == [(2, 20), (3, 8), (4, 5), (5, 3), (6, 0)]
    assert [h for _, h in bars(head) + bars(tail)] == sorted(COUNTS, reverse=True)
    assert {p.get_facecolor() for p in head}.isdisjoint({p.get_facecolor() for p in tail})
    assert N_HEAD - 1 < boundary_x(ax) < N_HEAD  # between the last head bar and the first tail bar
    assert [t.get_text() for t in ax.get_xticklabels()] == [NAMES[c] for c in ORDER]
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert set(legend) == {"head | tail boundary", "head: 2 classes, 66% of examples", "tail: 5 classes, 34% of examples"}


def test_per_class_f1_has_one_series_per_run_in_head_to_tail_order():
    runs = {"CLS-tuning": [0.1, 0.9, 0.2, 0.8, 0.0, 0.3, 0.7], "Prompt-tuning": torch.linspace(0, 0.6, 7)}
    ax = per_class_f1_figure(runs, COUNTS, 0.8, NAMES).axes[0]
    assert [c.get_label() for c in ax.containers] == list(runs)
    for container, values in zip(ax.containers, runs.values()):
        assert [h for _, h in bars(container)] == pytest.approx([float(values[c]) for c in ORDER])
    first, second = ([x for x, _ in bars(c)] for c in ax.containers)
    assert [(a + b) / 2 for a, b in zip(first, second)] == pytest.approx(range(7))  # grouped per class
    assert all(a < b for a, b in zip(first, second))
    assert N_HEAD - 1 < boundary_x(ax) < N_HEAD
    assert {"CLS-tuning", "Prompt-tuning", "head | tail boundary"} <= {t.get_text() for t in ax.figure.legends[0].get_texts()}
    assert [t.get_text() for t in ax.get_xticklabels()] == [NAMES[c] for c in ORDER]

    (single,) = per_class_f1_figure(runs["CLS-tuning"], COUNTS, 0.8).axes[0].containers  # one run, no dict
    assert [h for _, h in bars(single)] == pytest.approx([runs["CLS-tuning"][c] for c in ORDER])
    with pytest.raises(ValueError, match="7 classes"):
        per_class_f1_figure({"short": [0.5] * 6}, COUNTS, 0.8)


def test_unrenderable_label_names_fall_back_to_class_indices():
    ax = weight_norms_figure(torch.arange(7.0), COUNTS, 0.8, ["\U000f0000"] * 7).axes[0]  # a private-use glyph
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in ORDER]
    assert "class index" in ax.get_xlabel()
    assert [h for _, h in bars(ax.containers[0])] == [float(c) for c in ORDER]


def test_class_weight_norms_match_hand_computed_norms(tiny_bert_dir):
    cls = ClsTuningModule(tiny_bert_dir, num_classes=3)
    rows = cls.head[-1].weight.tolist()
    norms = cls.class_weight_norms()
    assert norms.tolist() == pytest.approx([math.sqrt(sum(w * w for w in row)) for row in rows], rel=1e-6)

    prompt = prompt_module(tiny_bert_dir)
    embeddings = prompt.mlm.get_output_embeddings().weight.tolist()
    expected = []
    for word in VERBALIZER:  # the class weight is the mean of the word's token embeddings
        mean = [sum(embeddings[t][i] for t in word) / len(word) for i in range(len(embeddings[0]))]
        expected.append(math.sqrt(sum(v * v for v in mean)))
    assert prompt.class_weight_norms().tolist() == pytest.approx(expected, rel=1e-6)
    ax = weight_norms_figure({"cls": norms, "prompt": prompt.class_weight_norms()}, [3, 1, 2], 0.65).axes[0]
    assert [h for _, h in bars(ax.containers[0])] == pytest.approx([norms.tolist()[i] for i in (0, 2, 1)])  # head to tail

    with pytest.raises(ValueError, match="no verbalizer"):
        PromptTuningModule(tiny_bert_dir, num_classes=3).class_weight_norms()


def test_plot_writer_orders_by_test_counts_when_metrics_split_on_each_set(tmp_path, tiny_bert_dir):
    require_split("cmid", "test")
    datamodule = CMIDDataModule(data_dir=str(SHARED_DATA), model_name_or_path=tiny_bert_dir, limit_examples=200,
                                head_tail_from="eval")
    assert datamodule.metric_class_counts is None
    module = ClsTuningModule(tiny_bert_dir, num_classes=datamodule.num_classes)
    confusion = torch.arange(datamodule.num_classes**2).reshape(datamodule.num_classes, -1) + 1
    module.last_test_metrics = {"test/per_class_f1": [c / 100 for c in range(datamodule.num_classes)],
                                "test/confusion_matrix": confusion.tolist()}
    figures = PlotWriter().figures(datamodule, module)
    assert list(figures) == ["class_distribution.png", "per_class_f1.png", "weight_norms.png", "confusion_matrix.png"]

    counts = datamodule.class_counts("test")
    order = sorted(range(len(counts)), key=lambda c: -counts[c])  # stable: ties by class index
    heights = [h for c in figures["class_distribution.png"].axes[0].containers for _, h in bars(c)]
    assert heights == [counts[c] for c in order]
    (f1,) = figures["per_class_f1.png"].axes[0].containers
    assert f1.get_label() == "ClsTuningModule"
    assert [h for _, h in bars(f1)] == pytest.approx([c / 100 for c in order])
    (norms,) = figures["weight_norms.png"].axes[0].containers
    assert [h for _, h in bars(norms)] == pytest.approx(module.head[-1].weight.norm(dim=1)[order].tolist())
    shares = figures["confusion_matrix.png"].axes[0].images[0].get_array()  # rows: true class, head to tail
    ordered = confusion[order][:, order].double()
    torch.testing.assert_close(torch.as_tensor(shares.data), ordered / ordered.sum(dim=1, keepdim=True))

    trainer = SimpleNamespace(is_global_zero=True, datamodule=datamodule, log_dir=str(tmp_path / "logs"),
                              default_root_dir=str(tmp_path))
    PlotWriter(enabled=False).on_test_end(trainer, module)
    PlotWriter(output_dir=str(tmp_path / "plots")).on_test_end(trainer, module)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["plots", *PlotWriter.FILES, PlotWriter.CONFUSION_FILE])


@pytest.mark.slow
def test_cli_fit_leaves_the_three_pngs_in_the_log_dir(tmp_path, tiny_bert_dir, monkeypatch):
    require_split("cmid", "train")
    config = write_cmid_run(tmp_path, tiny_bert_dir, "lt_tuning.ClsTuningModule",
                            data={"limit_examples": 64, "batch_size": 32}, model={"learning_rate": 0.001},
                            trainer={"max_steps": 4, "val_check_interval": 2})
    main(["fit", "--config", str(config)])
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    for name in PlotWriter.FILES:
        data = (run / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, name
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temporary file behind

    # benchmarks/study/plot_runs.py rebuilds DataModule, best checkpoint and per-class F1 from the folder
    spec = importlib.util.spec_from_file_location("plot_runs", ROOT / "benchmarks" / "study" / "plot_runs.py")
    plot_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_runs)
    dm, module, per_class_f1 = plot_runs.load_run(tmp_path / "runs")
    assert isinstance(dm, CMIDDataModule) and isinstance(module, ClsTuningModule)
    assert per_class_f1 == json.loads((run / "test_metrics.json").read_text())["test/per_class_f1"]
    monkeypatch.setattr(sys, "argv", ["plot_runs.py", "--output", str(tmp_path / "compare"),
                                      "--run", f"A={tmp_path / 'runs'}", "--run", f"B={tmp_path / 'runs'}"])
    plot_runs.main()
    for name in PlotWriter.FILES:
        assert (tmp_path / "compare" / name).read_bytes()[:8] == PNG_SIGNATURE, name
