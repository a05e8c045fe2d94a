"""Run the whole-study grid as one Optuna study: any number of workers, on any number of machines, take its cells.

A set of cells (dataset x method x seed) is one study in a database (``lt_tuning.tuning``'s
storage, with heartbeats). ``whole``: ``report.planned_cells()`` x seeds 775-777 (135 runs), seed
by seed within a block of a dataset (so a stopped grid has one seed of every method of a block
before the next), in the order CMID's study rows and remedies, CTC's study rows, R52's study rows
and CLS-tuning remedies. ``seeds-778-779``: the 10 study rows on CMID and CTC x seeds 778 and 779
(40 runs). A worker queues the set's cells that have no ``run.json`` and no trial waiting,
running or complete, then takes queued cells in order: each runs through ``reproduce.py`` in its
own process with one torch thread (a run's figures depend on the thread count; the record says
one) and its ``run.json`` is committed (``--no-commit``: left), until none is queued. A failed cell
is queued again by the next worker that starts; a killed worker (SIGKILL, preemption) takes its
run down with it, and two heartbeats later (2 minutes) its cell is queued again. Start as many
workers as you like, from a clean checkout (``reproduce.py`` refuses a dirty tree)::

    LT_TUNING_DATA=../shared/data python benchmarks/study/grid.py --set seeds-778-779 &
    LT_TUNING_DATA=../shared/data python benchmarks/study/grid.py --set seeds-778-779 &

The study is ``benchmarks/results/study/grid.db`` (SQLite, not committed); workers on many
machines, each in its own clone, share one ``--storage postgresql://user:password@host/db``.
Then ``python benchmarks/study/report.py --figure docs/images/study_tail_f1.png`` writes the tables.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna

from lt_tuning.tuning import open_storage
from report import SEEDS, STUDY, planned_cells
from reproduce import ROOT, cell_name, finished

OUTPUT = Path("benchmarks/results/study")
OVERRIDES = ["--config", "examples/own_backbone.yaml"]
HEARTBEAT_S = 60  # a cell silent for two heartbeats is queued again
SETS = {"whole": "whole study", "seeds-778-779": "seeds 778-779"}  # name -> its commits' label
QUEUED = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)


def cells(name: str = "whole") -> list[tuple[str, str, int]]:
    """(dataset, method, seed) of a set, in the grid's order: per block of a dataset, seed by seed."""
    planned = planned_cells() if name == "whole" else [(d, m) for d in ("cmid", "ctc") for m in STUDY]
    ordered = []
    for dataset in dict.fromkeys(d for d, _ in planned):
        for seed in SEEDS if name == "whole" else (778, 779):
            ordered += [(dataset, method, seed) for d, method in planned if d == dataset]
    return ordered


class CellFailed(Exception):
    """reproduce.py failed on a cell: its trial fails, the worker goes on."""


def _cell(trial: optuna.trial.FrozenTrial) -> str | None:
    return trial.system_attrs.get("fixed_params", trial.params).get("cell")


def open_grid(name: str, storage: str | None = None) -> optuna.Study:
    """The set's study, with its cells queued that have no run.json and no trial waiting, running or complete."""
    (ROOT / OUTPUT).mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{ROOT / OUTPUT / 'grid.db'}"
    study = optuna.create_study(storage=open_storage(url, HEARTBEAT_S), study_name=f"study-grid-{name}",
                                direction="maximize", load_if_exists=True)
    taken = {_cell(trial) for trial in study.get_trials(deepcopy=False, states=QUEUED)}
    for cell in cells(name):
        if cell_name(*cell) not in taken and not finished(ROOT / OUTPUT / "runs" / cell_name(*cell)):
            study.enqueue_trial({"cell": cell_name(*cell)})
    return study


def dying_with_worker(command: list[str]) -> list[str]:
    """``command`` SIGKILLed when this worker dies (util-linux's ``setpriv``, where there is one; no
    ``preexec_fn`` beside the heartbeat thread), its run with it (``reproduce.die_with_parent``)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *command] if setpriv else command


def run_cell(trial: optuna.Trial, name: str, commit: bool) -> float:
    """The trial's cell through reproduce.py (one torch thread), its run.json committed; its test macro F1."""
    dataset, method, seed = {cell_name(*cell): cell for cell in cells(name)}[
        trial.suggest_categorical("cell", [cell_name(*cell) for cell in cells(name)])]
    run_dir = OUTPUT / "runs" / cell_name(dataset, method, seed)
    other = [t.number for t in trial.study.get_trials(deepcopy=False, states=QUEUED[1:])
             if t.number != trial.number and _cell(t) == run_dir.name]
    if other:  # two workers drew the same cell at the same moment: the first runs it
        trial.set_user_attr("duplicate_of", other[0])
        raise optuna.TrialPruned(f"{run_dir.name} is trial {other[0]}'s")
    if not finished(ROOT / run_dir):
        command = [sys.executable, "benchmarks/study/reproduce.py", "--datasets", dataset, "--methods", method,
                   "--seeds", str(seed), "--output", str(OUTPUT), "--no-table", "--", *OVERRIDES]
        result = subprocess.run(dying_with_worker(command), cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                capture_output=True, text=True)
        if result.returncode != 0:
            trial.set_user_attr("error", (result.stdout[-1000:] + result.stderr[-1000:]).strip())
            print(f"FAILED {run_dir.name}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}", flush=True)
            raise CellFailed(run_dir.name)
        print(f"done {run_dir.name}", flush=True)
        if commit:
            with open(ROOT / OUTPUT / ".grid.lock", "w") as lock:  # one commit at a time in this clone
                fcntl.flock(lock, fcntl.LOCK_EX)
                subprocess.run(["git", "add", str(run_dir / "run.json")], cwd=ROOT, check=True)
                subprocess.run(["git", "commit", "-q", "-m", f"grid: {dataset} {method} seed {seed} ({SETS[name]})"],
                               cwd=ROOT, check=True)
    return json.loads((ROOT / run_dir / "run.json").read_text())["f1"]


def work(study: optuna.Study, name: str, commit: bool = True) -> None:
    """Take queued cells until none is left."""
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        study.optimize(lambda trial: run_cell(trial, name, commit), n_trials=1, catch=(CellFailed,))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=SETS, default="whole", help="which cells (default: the whole study)")
    parser.add_argument("--storage", help="the study's database URL (default: SQLite in the grid's output folder)")
    parser.add_argument("--no-commit", dest="commit", action="store_false", help="leave each run.json uncommitted")
    parser.add_argument("--list", action="store_true", help="print the cells not finished yet, run nothing")
    args = parser.parse_args(argv)
    todo = [cell for cell in cells(args.set) if not finished(ROOT / OUTPUT / "runs" / cell_name(*cell))]
    print(f"{len(todo)} of {len(cells(args.set))} runs to go", flush=True)
    if args.list:
        print("\n".join(" ".join(map(str, cell)) for cell in todo))
        return
    work(open_grid(args.set, args.storage), args.set, args.commit)


if __name__ == "__main__":
    main()
