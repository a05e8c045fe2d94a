"""The code blocks of README.md and the documentation's pages (docs/*.md) that no other test runs, run as
a reader would paste them (README's Python example, the trained-model blocks and the CLI runs have their
own tests; blocks that need a GPU, SLURM or a download stay unrun)."""

from __future__ import annotations

import csv
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT
from docblocks import code_block
from lt_tuning.cli import main


def test_metrics_block_gives_the_hand_computed_head_and_tail_f1():
    # labels: class 0 four times (the head: 4/7 < 0.65), class 1 twice, class 2 once (the tail)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0, 1, 0, 2]), 3).float()  # one class-1 miss
    namespace = {"dm": SimpleNamespace(num_classes=3), "logits": logits, "labels": labels}
    exec(code_block("docs/metrics.md", "HeadTailF1("), namespace)
    result = {key: float(value) for key, value in namespace["metric"].compute().items()}
    # F1: class 0 = 2*4 / (2*4 + 1 fp) = 8/9; class 1 = 2*1 / (2*1 + 1 fn) = 2/3; class 2 = 1
    assert result == pytest.approx({"head_f1": 8 / 9, "tail_f1": (2 / 3 + 1) / 2})


def test_load_dataset_block_builds_the_own_data_datamodule(monkeypatch):
    monkeypatch.chdir(ROOT)  # the block's paths are from the repository root
    namespace: dict = {}
    exec(code_block("docs/data.md", "load_dataset("), namespace)
    dm = namespace["dm"]
    with open(ROOT / "examples/own_data/train.csv", encoding="utf-8") as handle:
        counts = Counter(row["category"] for row in csv.DictReader(handle))
    assert dm.label_names == ["billing", "delivery", "refund", "login"]
    assert dm.class_counts("train") == [counts[name] for name in dm.label_names]
    assert dm.verbalizer.token_ids.shape[0] == 4


def test_figures_block_draws_and_saves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = SimpleNamespace(class_counts=lambda split: [5, 3, 1], head_tail_ratio=0.65, label_names=["a", "b", "c"])

    def run(f1: list[float]) -> SimpleNamespace:
        return SimpleNamespace(last_test_metrics={"test/per_class_f1": f1}, class_weight_norms=lambda: [1.0, 0.8, 0.5])

    namespace = {"dm": dm, "cls_model": run([0.9, 0.5, 0.0]), "prompt_model": run([0.9, 0.6, 0.4])}
    exec(code_block("docs/diagnosing.md", "per_class_f1_figure("), namespace)
    assert (tmp_path / "per_class_f1.png").read_bytes()[:4] == b"\x89PNG"
    assert len(namespace["fig"].axes[0].patches) == 6  # 3 classes x 2 runs


@pytest.mark.parametrize(("option", "name", "argument"), [("--data.help", "CMIDDataModule", "--data.data_dir"),
                                                        ("--model.help", "PromptTuningModule", "--model.learning_rate")])
def test_help_commands_list_the_arguments(option, name, argument, capsys):
    assert f"lt-tuning fit {option} {name}" in code_block("docs/getting-started.md", "--data.help")
    with pytest.raises(SystemExit) as done:
        main(["fit", option, name])
    assert done.value.code == 0 and argument in capsys.readouterr().out
