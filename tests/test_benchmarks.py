"""The speed benchmarks run and write valid result files (one quick benchmark, tiny sizes; no timing)."""

from __future__ import annotations

import json

from conftest import SHARED_DATA, require_split


def test_padding_benchmark_writes_json_and_table(tmp_path, run_script):
    require_split("r52", "dev")
    require_split("r52", "test")
    run_script("bench_padding.py", "--tasks", "r52", "--formats", "prompt", "--epochs", "2", "--limit", "200",
               "--results-dir", tmp_path, "--data-dir", SHARED_DATA)
    result = json.loads((tmp_path / "padding.json").read_text(encoding="utf-8"))
    row = result["results"]["r52/prompt"]
    assert row["examples_per_epoch"] == 200  # the first 200 rows of dev+test, the stand-in training split
    assert row["reference_tokens_per_epoch"] == 200 * 256
    grouped, dynamic = row["grouped_tokens_per_epoch"]["mean"], row["dynamic_tokens_per_epoch"]["mean"]
    assert row["real_tokens_per_epoch"] <= grouped <= dynamic
    assert "| R52 (prompt) |" in (tmp_path / "padding.md").read_text(encoding="utf-8")


def test_train_step_benchmark_trains_the_same_weights_both_ways(tmp_path, run_script):
    """The lockstep loops (benchmarks/_lockstep.py) and the hand loop run; the two end on the same weights."""
    require_split("cmid", "dev")
    run_script("bench_train_step.py", "--repeats", "1", "--steps", "3", "--skip", "1", "--batch-size", "4",
               "--modules", "cls", "--results-dir", tmp_path, "--data-dir", SHARED_DATA)
    result = json.loads((tmp_path / "train_step.json").read_text(encoding="utf-8"))["results"]["cls"]
    assert result["batch_shape"][0] == 4 and result["timed_steps_per_run"] == 1
    assert result["max_abs_weight_difference_after_training"] < 1e-6  # same optimizer, schedule, clipping
    assert "| ClsTuningModule (tanh) | 4x" in (tmp_path / "train_step.md").read_text(encoding="utf-8")
