"""The speed benchmarks run and write valid result files (one quick benchmark, tiny sizes; no timing)."""

from __future__ import annotations

import json
import sys

from conftest import ROOT, SHARED_DATA, require_split


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


def test_budget_curve_reads_tables_and_computes_the_gap(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from plot_budget_curve import main as plot_budget_curve

    def metric(*values):
        return {"mean": sum(values) / len(values), "values": list(values)}

    def cell(method, tail, seeds=(1, 2)):
        return {"dataset": "cmid", "method": method, "seeds": list(seeds), "tail_f1": metric(*tail)}

    for tokens, cls_tail, prompt_tail in ((0, (0.1004, 0.20), (0.10, 0.10)), (1000, (0.20, 0.20), (0.30, 0.50))):
        table = tmp_path / "curve" / f"tokens_{tokens}" / "table.json"
        table.parent.mkdir(parents=True)
        table.write_text(json.dumps([cell("cls_tuning_tanh", cls_tail), cell("prompt_tuning", prompt_tail, (2, 1))]))
    (tmp_path / "budgets" / "0").mkdir(parents=True)  # a budget folder's report, and one given by --report
    (tmp_path / "budgets" / "0" / "pretraining_report.json").write_text(json.dumps({"heldout_mlm_acc_zh": 0.0}))
    report = tmp_path / "final_report.json"
    report.write_text(json.dumps({"tokens_seen": 1000, "heldout_mlm_acc_zh": 0.125, "heldout_mlm_acc_en": 0.25}))
    plot_budget_curve(["--curve", str(tmp_path / "curve"), "--budgets", str(tmp_path / "budgets"),
                       "--report", str(report), "--output", str(tmp_path / "out")])
    gaps = json.loads((tmp_path / "out" / "budget_curve.json").read_text())["gaps"]
    assert [(g["tokens"], round(g["gap"], 6)) for g in gaps] == [(0, -0.0502), (1000, 0.2)]
    # prompt's seeds come as (2, 1): seed 1's gap pairs prompt 0.10 with CLS 0.1004 (-0.04 points, printed
    # +0.0, not -0.0), seed 2's 0.10 with 0.20
    assert (tmp_path / "out" / "budget_curve.md").read_text().splitlines()[-2:] == [
        "| cmid | 0 | 0.0 | -5.0 | 2: -10.0, 1: +0.0 |", "| cmid | 1,000 | 12.5 / 25.0 | +20.0 | 2: +10.0, 1: +30.0 |"]
    assert (tmp_path / "out" / "budget_curve.png").read_bytes()[:4] == b"\x89PNG"
