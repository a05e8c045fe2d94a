"""Aggregating run directories into the mean (std) table, and the reproduction script end to end."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from lt_tuning.results import aggregate_runs, format_table, load_run


def _fake_run(folder, seed, acc, f1, head, tail, method="prompt_tuning"):
    run = folder / f"{method}-{seed}"
    (run / "lightning_logs" / "version_0").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"dataset": "cmid", "method": method, "seed": seed}))
    metrics = {"test/acc": acc, "test/f1": f1, "test/head_f1": head, "test/tail_f1": tail, "test/per_class_f1": []}
    (run / "lightning_logs" / "version_0" / "test_metrics.json").write_text(json.dumps(metrics))
    return run


def test_aggregate_mean_and_population_std(tmp_path):
    runs = [
        _fake_run(tmp_path, 775, 0.50, 0.30, 0.60, 0.10),
        _fake_run(tmp_path, 776, 0.60, 0.40, 0.70, 0.30),
        _fake_run(tmp_path, 777, 0.70, 0.20, 0.80, 0.20, method="cls_tuning_tanh"),
    ]
    assert load_run(runs[0])["tail_f1"] == 0.10
    rows = aggregate_runs(runs)
    assert [(row["method"], row["n"], row["seeds"]) for row in rows] == [
        ("prompt_tuning", 2, [775, 776]), ("cls_tuning_tanh", 1, [777])
    ]
    assert rows[0]["acc"]["mean"] == pytest.approx(0.55) and rows[0]["acc"]["std"] == pytest.approx(0.05)
    assert rows[0]["tail_f1"]["mean"] == pytest.approx(0.20) and rows[0]["tail_f1"]["std"] == pytest.approx(0.10)
    assert rows[1]["f1"]["std"] == 0.0
    table = format_table(rows)
    assert table.splitlines()[0] == "| dataset | method | n | Acc | F1 | Head F1 | Tail F1 |"
    assert table.splitlines()[2] == "| cmid | prompt_tuning | 2 | 55.00 (5.00) | 35.00 (5.00) | 65.00 (5.00) | 20.00 (10.00) |"


def test_unfinished_run_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no test_metrics.json"):
        load_run(run)


@pytest.mark.slow
def test_reproduce_script_runs_cells_and_writes_table(tmp_path, tiny_bert_dir, run_script, capsys):
    out = tmp_path / "out"
    args = [
        "--datasets", "cmid", "--methods", "cls_tuning_tanh", "--seeds", "1", "--output", out, "--allow-dirty", "--",
        "--data.init_args.model_name_or_path", tiny_bert_dir, "--data.init_args.data_dir", SHARED_DATA / "cmid",
        "--data.init_args.limit_examples", "48", "--data.init_args.cache_dir", tmp_path / "cache",
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--plots.enabled", "false",
    ]
    run_script("study/reproduce.py", *args)
    rows = json.loads((out / "table.json").read_text())
    assert [(row["dataset"], row["method"], row["n"], row["seeds"]) for row in rows] == [
        ("cmid", "cls_tuning_tanh", 1, [1])
    ]  # one cell is enough here: test_aggregate_mean_and_population_std checks the mean (std) over seeds
    table = (out / "table.md").read_text()
    assert "| cmid | cls_tuning_tanh | 1 |" in table
    assert (out / "command.txt").read_text().startswith("python benchmarks/study/reproduce.py --datasets cmid")
    run = json.loads((out / "runs" / "cmid-cls_tuning_tanh-1" / "run.json").read_text())
    assert "--model.init_args.f1_over present --data.init_args.head_tail_from eval" in run["command"]  # the study's
    assert run["tail_f1"] == rows[0]["tail_f1"]["values"][0]  # run.json is the whole record: metrics included
    assert run["record"]["files"]["backbone"]["path"] == tiny_bert_dir and run["record"]["git"]["allow_dirty"]
    for log in out.rglob("test_metrics.json"):
        log.unlink()
    capsys.readouterr()
    run_script("study/reproduce.py", *args)  # as on a new clone: the committed run.json is enough
    assert "done already" in capsys.readouterr().out and json.loads((out / "table.json").read_text()) == rows
    run_script("study/reproduce.py", *args[:6], "2", *args[6:8], "--table-only", *args[8:])  # seeds 1 2: 2 never ran
    assert json.loads((out / "table.json").read_text()) == rows
    assert "Not run yet (1; the command runs them): cmid-cls_tuning_tanh-2." in (out / "table.md").read_text()
    assert "--table-only" not in (out / "command.txt").read_text()
