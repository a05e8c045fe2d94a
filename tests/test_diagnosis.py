"""Diagnosing the tail on real runs: two tiny CLI fits (one with temperature scaling and post-hoc
tau ``auto`` fitted on dev), their test_metrics.json against their own per-class numbers, the
checkpoint's dev-fitted buffers at inference, and ``lt-tuning report`` on the two folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, require_split, write_cmid_run
from lt_tuning import load_classifier
from lt_tuning.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHOT_THRESHOLDS = (8, 3)  # 96 training examples over 36 classes: a few many-shot classes, some medium, most few


def _fit(folder: Path, tiny_bert_dir: str, method: str, **settings: object) -> Path:
    config = write_cmid_run(folder, tiny_bert_dir, method, data={"limit_examples": 96, "batch_size": 32},
                            model={"learning_rate": 0.003, "shot_thresholds": list(SHOT_THRESHOLDS), **settings},
                            trainer={"max_steps": 4, "val_check_interval": 2})
    main(["fit", "--config", str(config)])
    return folder / "runs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """``calibrated``: prompt-tuning with temperature scaling and post-hoc tau ``auto``; ``plain``: CLS-tuning."""
    require_split("cmid", "train")
    calibrated = {"temperature_scaling": True, "logit_adjustment": "posthoc", "logit_adjustment_tau": "auto"}
    return {"calibrated": _fit(tmp_path_factory.mktemp("calibrated"), tiny_bert_dir, "lt_tuning.PromptTuningModule",
                               **calibrated),
            "plain": _fit(tmp_path_factory.mktemp("plain"), tiny_bert_dir, "lt_tuning.ClsTuningModule")}


def _metrics(run: Path) -> dict:
    return json.loads((run / "lightning_logs" / "version_0" / "test_metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["calibrated", "plain"])
def test_test_metrics_json_agrees_with_its_own_per_class_numbers(name, runs):
    metrics = _metrics(runs[name])
    per_class, confusion = metrics["test/per_class_f1"], torch.tensor(metrics["test/confusion_matrix"])
    labels = metrics["labels"]
    train = metrics["test/train_class_counts"]
    assert len(per_class) == len(labels) == len(train) == confusion.shape[0] == 36 and sum(train) == 96
    # the buckets by training counts (thresholds 8 and 3), named, with their class counts
    many, few = SHOT_THRESHOLDS
    buckets = {"many": [c for c in labels if train[labels.index(c)] > many],
               "medium": [c for c in labels if few <= train[labels.index(c)] <= many],
               "few": [c for c in labels if train[labels.index(c)] < few]}
    assert metrics["shot_classes"] == buckets and all(buckets.values())
    seen = (confusion.sum(0) + confusion.sum(1)) > 0  # in the test targets or predictions: "present" classes
    for shot, classes in buckets.items():
        assert metrics[f"test/{shot}_classes"] == len(classes)
        present = [per_class[labels.index(c)] for c in classes if seen[labels.index(c)]]
        if present:
            assert metrics[f"test/{shot}_f1"] == pytest.approx(sum(present) / len(present), abs=1e-6)
        else:
            assert f"test/{shot}_f1" not in metrics
    # where the tail's errors go, from the confusion matrix
    head = [labels.index(c) for c in metrics["head_classes"]]
    tail = [labels.index(c) for c in metrics["tail_classes"]]
    errors = confusion[tail].sum() - confusion[tail, tail].sum()
    if errors:
        assert metrics["test/tail_to_head_share"] == pytest.approx(float(confusion[tail][:, head].sum() / errors))
    top = metrics["top_confusions"]
    assert top and all(confusion[labels.index(t), labels.index(p)] == n for t, p, n in top)
    assert [n for _, _, n in top] == sorted((n for _, _, n in top), reverse=True)
    assert 0 <= metrics["test/ece"] <= 1
    png = runs[name] / "lightning_logs" / "version_0" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_dev_fitted_temperature_and_tau_are_in_the_checkpoint_and_applied_at_inference(runs):
    metrics = _metrics(runs["calibrated"])
    fit = metrics["test/posthoc_fit"]
    assert fit["temperature"] == pytest.approx(metrics["test/temperature"])
    assert fit["dev_nll_after"] <= fit["dev_nll_before"]
    assert fit["posthoc_tau"] == metrics["test/posthoc_tau"] and fit["posthoc_tau"] in (0, .25, .5, .75, 1, 1.25, 1.5, 2)
    assert "test/ece_before_temperature" in metrics and "test/many_ece_before_temperature" in metrics
    (best,) = (runs["calibrated"] / "lightning_logs" / "version_0" / "checkpoints").glob("best-*.ckpt")
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert float(state["temperature"]) == pytest.approx(fit["temperature"])
    assert float(state["posthoc_tau"]) == fit["posthoc_tau"]

    classifier = load_classifier(best)
    texts = ["头痛发烧怎么办", "胃疼吃什么药"]
    probs = classifier.predict_proba(texts)
    classifier.module.temperature.fill_(1.0)
    unscaled = classifier.predict_proba(texts)
    torch.testing.assert_close(probs, (unscaled.log() / fit["temperature"]).softmax(dim=-1), atol=1e-5, rtol=1e-4)


def test_report_compares_two_run_folders(runs, tmp_path, capsys):
    output = tmp_path / "out" / "report.md"
    main(["report", f"prompt={runs['calibrated']}", str(runs["plain"]), "--output", str(output)])
    text = output.read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    calibrated, plain = _metrics(runs["calibrated"]), _metrics(runs["plain"])
    row = next(line for line in text.splitlines() if line.startswith("| prompt |")).split(" | ")
    assert row[1] == f"{100 * calibrated['test/acc']:.2f}" and row[2] == f"{100 * calibrated['test/f1']:.2f}"
    assert f"({calibrated['test/few_classes']:.0f})" in row[7]
    assert "| runs |" in text and "| runs |" in printed  # the unnamed run is named after its folder
    assert f"{100 * plain['test/ece']:.2f}" in next(line for line in text.splitlines() if line.startswith("| runs |"))
    true, predicted, count = plain["top_confusions"][0]
    assert f"| {true} | {predicted} | {count} |" in text
    for name in ("report-per_class_f1.png", "report-confusion-prompt.png", "report-confusion-runs.png"):
        assert f"]({name})" in text and (output.parent / name).read_bytes()[:8] == PNG_SIGNATURE


def test_report_command_reads_folders_without_torch(runs, tmp_path):
    script = ("import sys; from lt_tuning.cli import main; "
              f"main(['report', {str(runs['plain'])!r}, '--output', 'r.md']); "
              "assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.md").is_file() and "Wrote r.md and 2 figures" in done.stdout


def test_report_refuses_a_folder_without_a_finished_test(tmp_path):
    with pytest.raises(SystemExit, match="error: .*no test_metrics.json below it"):
        main(["report", str(tmp_path)])
