"""The speed benchmarks run and write valid result files (one quick benchmark, tiny sizes; no timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, SHARED_DATA, require_split


def test_padding_benchmark_writes_json_and_table(tmp_path):
    require_split("r52", "dev")
    require_split("r52", "test")
    command = [
        sys.executable, str(ROOT / "benchmarks" / "bench_padding.py"), "--tasks", "r52", "--formats", "prompt",
        "--epochs", "2", "--limit", "200", "--results-dir", str(tmp_path), "--data-dir", str(SHARED_DATA),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "padding.json").read_text(encoding="utf-8"))
    row = result["results"]["r52/prompt"]
    assert row["examples_per_epoch"] == 200  # the first 200 rows of dev+test, the stand-in training split
    assert row["reference_tokens_per_epoch"] == 200 * 256
    grouped, dynamic = row["grouped_tokens_per_epoch"]["mean"], row["dynamic_tokens_per_epoch"]["mean"]
    assert row["real_tokens_per_epoch"] <= grouped <= dynamic
    assert "| R52 (prompt) |" in (tmp_path / "padding.md").read_text(encoding="utf-8")
