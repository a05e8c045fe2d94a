"""The study's pipeline (benchmarks/study/): grid runs record what they depend on, the report's
statistics and tables, the budget curve, and rerun.py comparing a rerun with the record."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks" / "study"))
import reproduce  # noqa: E402  (the scripts' folder first)
import rerun  # noqa: E402
from record import diff_records, run_record  # noqa: E402


def test_budget_curve_reads_tables_and_computes_the_gap(tmp_path):
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


def test_kendall_tau_b_counts_agreeing_pairs_and_ties():
    from report import kendall_tau

    # one swapped pair of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx({"tau": 4 / 6, "agree": 5, "disagree": 1, "pairs": 6})
    # a tie in x: tau-b = 2 / sqrt((3 - 1) * (3 - 0))
    assert kendall_tau([1, 1, 2], [1, 2, 3])["tau"] == pytest.approx(2 / 6**0.5)


def test_seeds_text_names_the_common_seeds_then_the_cells_with_others():
    from report import STUDY, seeds_text

    five = {("cmid", m): {"seeds": [779, 775, 776, 777, 778]} for m in STUDY}
    three = {(d, m): {"seeds": [775, 776, 777]} for d in ("ctc", "r52") for m in STUDY}
    odd = {("r52", "cls_tuning_focal"): {"seeds": [775, 778]}}
    assert seeds_text({**five, **three}) == "seeds 775-777 (775-779: the 10 study rows on CMID)"
    assert seeds_text({**three, **odd}) == "seeds 775-777 (775, 778: r52-cls_tuning_focal)"


def test_study_report_tables_claims_and_remedies(tmp_path):
    from report import main as study_report

    def run(dataset, method, seed, f1, tail):
        folder = tmp_path / "runs" / f"{dataset}-{method}-{seed}"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"dataset": dataset, "method": method, "seed": seed, "acc": 0.5,
                                                     "f1": f1, "head_f1": 0.6, "tail_f1": tail}))

    for i, seed in enumerate((775, 776, 777)):
        run("cmid", "cls_tuning_relu", seed, 0.10, 0.05 + i / 100)  # tail 5, 6, 7
        run("cmid", "prompt_tuning", seed, 0.20, 0.15 + i / 100)  # tail 15, 16, 17: +10, se sqrt(2/3)
        run("cmid", "cls_tuning_pt_ln", seed, 0.18, 0.16 - i / 100)  # F1 80% of the gap
        run("cmid", "cls_tuning_tau_norm", seed, 0.11, 0.155 + i / 100)
    run("cmid", "cls_tuning_tanh", 775, 0.1, 0.05)
    study_report(["--runs", str(tmp_path / "runs"), "--output", str(tmp_path), "--figure", str(tmp_path / "tail.png")])
    numbers = json.loads((tmp_path / "report.json").read_text())
    claims = {(c["claim"], c["metric"]): c for c in numbers["claims"]}
    beats = claims[("Prompt-tuning beats CLS-tuning (R)", "tail_f1")]
    assert (round(beats["d"], 6), round(beats["se"], 6), beats["verdict"]) == (10, round((2 / 3) ** 0.5, 6), "holds")
    assert claims[("Prompt-tuning beats CLS-tuning (T)", "f1")]["verdict"] == "fewer than 2 seeds"
    assert claims[("Prompt-tuning beats CLS-tuning (R)", "f1")]["paper_d"] == pytest.approx(8.9)
    gap = next(g for g in numbers["gap_recovered"] if (g["dataset"], g["metric"]) == ("cmid", "f1"))
    assert gap["ours_cls_tuning_pt_ln"] == pytest.approx(0.8) and gap["paper_cls_tuning_pt_ln"] == pytest.approx(8 / 8.9)
    assert gap["verdict"] == "holds"  # 80% of the gap, +8 points over CLS-tuning (R) with no spread
    tau_norm = next(r for r in numbers["remedies"] if r["method"] == "cls_tuning_tau_norm")
    assert tau_norm["tail_f1_vs_prompt"]["verdict"] == "within seed noise"  # +0.5 against se 0.82
    assert tau_norm["tail_f1_vs_base"]["verdict"] == "fewer than 2 seeds"  # CLS-tuning (T) has one seed
    text = (tmp_path / "report.md").read_text()
    assert "| CLS-tuning (R) | 50.0 (0.0) [50.9] | 10.0 (0.0) [34.5] |" in text
    short = next(line for line in text.splitlines() if line.startswith("Cells not run or short of 3 seeds"))
    assert "cmid-cls_tuning_tanh," in short and "cmid-prompt_tuning," not in short
    assert (tmp_path / "tail.png").read_bytes()[:4] == b"\x89PNG"


def test_study_report_many_medium_few_from_per_class_f1_and_training_counts(tmp_path):
    from report import main as study_report

    from conftest import SHARED_DATA, require_split

    require_split("cmid", "train")
    labels = json.loads((SHARED_DATA / "cmid" / "label2idx.json").read_text(encoding="utf-8"))
    rows = (SHARED_DATA / "cmid" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    counts = [0] * len(labels)
    for row in rows:
        counts[labels[row.rsplit("\t", 1)[1]]] += 1
    # F1 1.0 on many-shot classes (> 100 training examples), .5 on medium (20-100), .0 on few (< 20);
    # prompt-tuning .1 higher on medium classes, one seed .2 higher on few ones
    bucket_f1 = [1.0 if n > 100 else 0.5 if n >= 20 else 0.0 for n in counts]
    for seed in (775, 776, 777):
        for method, extra in (("cls_tuning_tanh", (0, 0)), ("prompt_tuning", (0.1, 0.2 * (seed == 777)))):
            f1 = [v + (extra[0] if v == 0.5 else extra[1] if v == 0 else 0) for v in bucket_f1]
            folder = tmp_path / "runs" / f"cmid-{method}-{seed}"
            folder.mkdir(parents=True)
            (folder / "run.json").write_text(json.dumps({"dataset": "cmid", "method": method, "seed": seed, "acc": .5,
                                                         "f1": .5, "head_f1": .5, "tail_f1": .5, "per_class_f1": f1}))
    study_report(["--runs", str(tmp_path / "runs"), "--output", str(tmp_path), "--data_dir", str(SHARED_DATA)])
    shots = json.loads((tmp_path / "report.json").read_text())["shots"]
    assert shots["buckets"]["cmid"] == {"many": sum(n > 100 for n in counts), "medium": sum(20 <= n <= 100 for n in counts),
                                        "few": sum(n < 20 for n in counts)}
    cls = next(r for r in shots["runs"] if r["method"] == "cls_tuning_tanh")
    assert cls["many"] == [1.0] * 3 and cls["medium"] == [0.5] * 3 and cls["few"] == [0.0] * 3
    (advantage,) = shots["prompt_vs_cls_tuning_tanh"]
    assert advantage["medium"]["d"] == pytest.approx(10) and advantage["medium"]["verdict"] == "holds"  # no spread
    assert advantage["few"]["d"] == pytest.approx(20 / 3) and advantage["few"]["verdict"] == "within seed noise"
    assert advantage["many"]["d"] == pytest.approx(0)
    assert "Largest advantage per dataset: cmid medium." in (tmp_path / "report.md").read_text()


def test_study_grid_sets_run_each_cell_once_one_dataset_at_a_time():
    from grid import cells
    from report import STUDY

    grid = cells()
    # 10 study rows on 3 datasets, 5 CLS-tuning remedies on CMID and R52, 5 prompt-tuning ones on CMID: x 3 seeds
    assert len(grid) == len(set(grid)) == (10 * 3 + 5 * 2 + 5) * 3
    assert [d for d, _, _ in grid] == ["cmid"] * 60 + ["ctc"] * 30 + ["r52"] * 45
    assert [s for _, _, s in grid[:60]] == [775] * 20 + [776] * 20 + [777] * 20  # one seed of every method first
    more = cells("seeds-778-779")  # the 10 study rows on CMID and CTC, 2 more seeds: 40 runs
    assert len(more) == len(set(more)) == 40 and {m for _, m, _ in more} == set(STUDY)
    assert [(d, s) for d, _, s in more] == [(d, s) for d in ("cmid", "ctc") for s in (778, 779) for _ in range(10)]


def test_study_grid_workers_share_one_study_run_each_cell_once_and_commit_each_run_json(grid_repo, monkeypatch):
    """Two workers (threads here; processes or machines alike) on one SQLite study take the 4 queued
    cells: each runs once through reproduce.py with one thread; the failing one commits nothing and
    is queued again by the next worker that starts, and only it."""
    import threading
    import time

    import grid as study_grid

    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "t")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "t@t")
    calls, real_run = [], subprocess.run

    def fake_reproduce(command, cwd=None, **kwargs):  # seed 2 fails; the others leave a run.json and a log
        if command[0] == "git":
            return real_run(command, cwd=cwd, **kwargs)
        calls.append((command, kwargs["env"]["OMP_NUM_THREADS"], threading.get_ident()))
        time.sleep(0.2)  # long enough for the other worker to take the next cell
        seed = command[command.index("--seeds") + 1]
        if seed == "2":
            return subprocess.CompletedProcess(command, 1, "", "boom")
        run_dir = cwd / study_grid.OUTPUT / "runs" / f"cmid-prompt_tuning-{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text('{"f1": 0.5}')
        (run_dir / "log.txt").write_text("log")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(study_grid, "ROOT", grid_repo)
    monkeypatch.setattr(study_grid.subprocess, "run", fake_reproduce)
    monkeypatch.setattr(study_grid, "cells", lambda name: [("cmid", "prompt_tuning", seed) for seed in (1, 2, 3, 4)])
    studies = [study_grid.open_grid("whole"), study_grid.open_grid("whole")]  # the second queues nothing more
    workers = [threading.Thread(target=study_grid.work, args=(study, "whole")) for study in studies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(c[c.index("--seeds") + 1] for c, _, _ in calls) == ["1", "2", "3", "4"]  # each cell once
    assert len({thread for _, _, thread in calls}) == 2  # both workers took cells
    assert all(threads == "1" and "--no-table" in c and c[c.index("--") + 1:] == study_grid.OVERRIDES
               for c, threads, _ in calls)
    assert all(c[c.index(sys.executable) + 1] == "benchmarks/study/reproduce.py" for c, _, _ in calls)
    subjects = git(grid_repo, "log", "--format=%s").splitlines()
    assert sorted(subjects[:3]) == [f"grid: cmid prompt_tuning seed {seed} (whole study)" for seed in (1, 3, 4)]
    assert subjects[3:] == ["grid inputs"]  # the failed cell commits nothing
    assert git(grid_repo, "show", "--name-only", "--format=", "HEAD").endswith("/run.json")  # the record, not the log
    states = {t.params["cell"]: t.state.name for t in studies[0].get_trials()}
    assert states == {"cmid-prompt_tuning-1": "COMPLETE", "cmid-prompt_tuning-2": "FAIL",
                      "cmid-prompt_tuning-3": "COMPLETE", "cmid-prompt_tuning-4": "COMPLETE"}

    calls.clear()
    study_grid.work(study_grid.open_grid("whole"), "whole")  # a new worker: the failed cell again, only it
    assert [c[c.index("--seeds") + 1] for c, _, _ in calls] == ["2"]


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def grid_repo(tmp_path):
    """A committed repository with CMID/prompt-tuning configs, a backbone folder and a CMID data folder."""
    repo = tmp_path / "repo"
    files = {
        "examples/data/cmid.yaml": "data:\n  class_path: lt_tuning.CMIDDataModule\n  init_args:\n    data_dir: data\n",
        "examples/methods/prompt_tuning.yaml": "model:\n  class_path: lt_tuning.PromptTuningModule\n",
        "examples/own.yaml": "data:\n  init_args:\n    model_name_or_path: backbone\n",
        "backbone/model.safetensors": "weights", "backbone/config.json": "{}", "backbone/README.md": "card",
        **{f"data/cmid/{name}": f"{name} rows" for name in
           ("train.tsv", "dev.tsv", "test.tsv", "label2idx.json", "verbalizer.json")},
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "grid inputs")
    return repo


def test_run_record_holds_commit_checksums_threads_versions_cpu(grid_repo):
    cli_args = ["fit", "--config", "examples/data/cmid.yaml", "--config", "examples/methods/prompt_tuning.yaml",
                "--config", "examples/own.yaml", "--trainer.default_root_dir", "out/runs/x"]
    record = run_record(cli_args, grid_repo)
    assert record["git"] == {"commit": git(grid_repo, "rev-parse", "HEAD"), "clean": True, "changes": [],
                             "allow_dirty": False}
    files = record["files"]
    assert list(files["configs"]) == ["examples/data/cmid.yaml", "examples/methods/prompt_tuning.yaml",
                                      "examples/own.yaml"]
    assert files["configs"]["examples/own.yaml"] == hashlib.sha256(b"data:\n  init_args:\n"
                                                                   b"    model_name_or_path: backbone\n").hexdigest()
    # the backbone is found through the resolved config (own.yaml's override); its model card is no input
    assert files["backbone"] == {"path": "backbone", "files": {
        "config.json": hashlib.sha256(b"{}").hexdigest(),
        "model.safetensors": hashlib.sha256(b"weights").hexdigest()}}
    assert files["data"]["train.tsv"] == {"path": str(grid_repo / "data" / "cmid" / "train.tsv"),
                                          "sha256": hashlib.sha256(b"train.tsv rows").hexdigest()}
    assert sorted(files["data"]) == ["dev.tsv", "label2idx.json", "test.tsv", "train.tsv", "verbalizer.json"]
    assert record["machine"]["torch_threads"] == torch.get_num_threads()
    assert record["machine"]["cpu"] and isinstance(record["machine"]["cpu_bf16_instructions"], list)
    assert set(record["versions"]) == {"python", "torch", "pytorch-lightning", "transformers", "tokenizers",
                                       "datasets", "torchmetrics", "numpy"}
    assert record["config"]["seed_everything"] == 775 and "default_root_dir" not in record["config"]["trainer"]
    (grid_repo / "examples" / "own.yaml").write_text("data:\n  init_args:\n    model_name_or_path: elsewhere\n")
    changed = run_record(cli_args, grid_repo)
    assert changed["git"]["clean"] is False and changed["git"]["changes"] == [" M examples/own.yaml"]
    assert changed["files"]["configs"]["examples/own.yaml"] != files["configs"]["examples/own.yaml"]


def test_reproduce_refuses_a_dirty_tree_unless_allowed_and_records_it(grid_repo, monkeypatch):
    started, real_run = [], subprocess.run

    def fake_run(command, cwd=None, **kwargs):  # the run (not git, nor platform's uname): a test_metrics.json
        if command[0] != sys.executable:
            return real_run(command, cwd=cwd, **kwargs)
        started.append(command)
        log_dir = cwd / command[command.index("--trainer.default_root_dir") + 1] / "version_0"
        log_dir.mkdir(parents=True)
        (log_dir / "test_metrics.json").write_text(json.dumps({f"test/{m}": 0.5 for m in ("acc", "f1", "head_f1",
                                                                                          "tail_f1")}))

    monkeypatch.setattr(reproduce, "ROOT", grid_repo)
    monkeypatch.setattr(reproduce.subprocess, "run", fake_run)
    (grid_repo / "notes.txt").write_text("not committed")
    args = ["--datasets", "cmid", "--methods", "prompt_tuning", "--seeds", "1", "--output", str(grid_repo / "out"),
            "--", "--config", "examples/own.yaml"]
    with pytest.raises(SystemExit, match="--allow-dirty"):
        reproduce.main(args)
    assert not started and not (grid_repo / "out" / "runs" / "cmid-prompt_tuning-1" / "run.json").exists()
    reproduce.main(["--allow-dirty", "--no-table", *args])
    assert sorted(p.name for p in (grid_repo / "out").iterdir()) == ["runs"]  # no one-cell table or command.txt
    run = json.loads((grid_repo / "out" / "runs" / "cmid-prompt_tuning-1" / "run.json").read_text())
    assert run["record"]["git"] | {"commit": None} == {
        "commit": None, "clean": False, "changes": ["?? notes.txt"], "allow_dirty": True}  # out/ is the grid's own
    assert run["command"].startswith("-m lt_tuning.cli fit --config examples/data/cmid.yaml "
                                     "--config examples/methods/prompt_tuning.yaml --seed_everything 1 "
                                     "--trainer.default_root_dir out/runs/cmid-prompt_tuning-1 ")  # from any clone
    assert run["f1"] == 0.5 and started[0][1:] == run["command"].split()


def test_compare_metrics_bit_for_bit():
    recorded = {"acc": 0.375, "f1": 0.1, "head_f1": 0.3, "tail_f1": 0.05, "per_class_f1": [0.5, 0.25, 0.0]}
    assert rerun.compare_metrics(recorded, dict(recorded)) == {
        "compared": 7, "differing": [], "max_abs_diff": 0.0, "identical": True}
    one_class = {**recorded, "per_class_f1": [0.5, 0.25 + 2**-40, 0.0]}
    result = rerun.compare_metrics(recorded, one_class)
    assert result["differing"] == ["per_class_f1[1]"] and result["max_abs_diff"] == 2**-40
    assert not result["identical"]
    assert not rerun.compare_metrics(recorded, {**recorded, "per_class_f1": [0.5, 0.25]})["identical"]  # a class lost
    old = {key: recorded[key] for key in ("acc", "f1", "head_f1", "tail_f1")}  # a run.json without per-class F1
    assert rerun.compare_metrics(old, recorded) == {"compared": 4, "differing": [], "max_abs_diff": 0.0,
                                                    "identical": True}


def test_diff_records_names_what_changed():
    then = {"git": {"commit": "a", "clean": True, "allow_dirty": False},
            "files": {"backbone": {"path": "examples/backbone", "files": {"model.safetensors": "1f"}}},
            "versions": {"torch": "2.13.0"}}
    now = {"git": {"commit": "b", "clean": True, "allow_dirty": True},
           "files": {"backbone": {"path": "examples/backbone", "files": {"model.safetensors": "2e"}}},
           "versions": {"torch": "2.13.0"}}
    assert diff_records(then, now) == ["files.backbone.files.model.safetensors: '1f' -> '2e'", "git.commit: 'a' -> 'b'"]
    assert diff_records(then, then) == []


def test_rerun_script_reruns_the_recorded_command_and_fails_on_a_difference(tmp_path, run_script, monkeypatch):
    for key in [key for key in os.environ if key.startswith(("OMP_", "MKL_"))] + ["OMP_NUM_THREADS"]:
        monkeypatch.setenv(key, "1")  # rerun.py sets this process's thread variables: restored after the test
    metrics = {"acc": 0.5, "f1": 0.25, "head_f1": 0.5, "tail_f1": 0.125, "per_class_f1": [0.25, 0.5]}
    fake_fit = ("import json, pathlib, sys; root = pathlib.Path(sys.argv[sys.argv.index('--trainer.default_root_dir') + 1]);"
                f"root.mkdir(parents=True, exist_ok=True); (root / 'test_metrics.json').write_text(json.dumps({metrics!r}));"
                "(root / 'argv.json').write_text(json.dumps(sys.argv))")
    command = ["-c", fake_fit, "--config", "/elsewhere/wt-grid/examples/own_backbone.yaml",
               "--trainer.default_root_dir", "benchmarks/results/grid/runs/same"]
    for name, recorded in (("same", metrics), ("other", {**metrics, "per_class_f1": [0.25, 0.75]})):
        (tmp_path / "grid" / "runs" / name).mkdir(parents=True)
        (tmp_path / "grid" / "runs" / name / "run.json").write_text(json.dumps({"command": shlex.join(command),
                                                                                 **recorded}))
    runs = [tmp_path / "grid" / "runs" / name for name in ("same", "other")]
    with pytest.raises(SystemExit) as exit_code:
        run_script("study/rerun.py", *runs, "--output", tmp_path / "out")
    assert exit_code.value.code == 1
    argv = json.loads((tmp_path / "out" / "grid-same" / "argv.json").read_text())
    assert argv[1:] == ["--config", "examples/own_backbone.yaml",  # another checkout's path, as this one's
                        "--trainer.default_root_dir", str(tmp_path / "out" / "grid-same")]
    same, other = json.loads((tmp_path / "out" / "rerun.json").read_text())
    assert same["identical"] and same["compared"] == 6 and same["record_differences"] is None
    assert other["differing"] == ["per_class_f1[1]"] and other["max_abs_diff"] == 0.25
    table = (tmp_path / "out" / "rerun.md").read_text()
    assert "| 50.0000 / 50.0000 | 25.0000 / 25.0000 | 50.0000 / 50.0000 | 12.5000 / 12.5000 | 2 classes, 0 differ " \
           "| 0 | identical |" in table
    assert "| 2 classes, 1 differ | 0.25 | **differs** |" in table and "differs in: per_class_f1[1]" in table
    with pytest.raises(SystemExit) as exit_code:
        run_script("study/rerun.py", *runs, "--output", tmp_path / "out2", "--no-fail")
    assert exit_code.value.code == 0
