"""Run the whole-study grid on several lanes side by side, committing each run as it lands.

The cells are ``report.planned_cells()`` x seeds 775-777, seed by seed within a block (so a
stopped grid has one seed of every method of a block before the next), in the order: CMID's study
rows and remedies, CTC's study rows, R52's study rows and CLS-tuning remedies. Each lane takes the
next cell, runs it through ``reproduce.py`` in its own process with one torch thread (a run's
figures depend on the thread count; the grid's record says one), and commits the cell's
``run.json`` (``--no-commit``: leaves it). Finished cells are skipped, so a stopped grid restarts
where it was. Run it from a clean checkout (``reproduce.py`` refuses a dirty tree)::

    LT_TUNING_DATA=../shared/data python benchmarks/study/grid.py --lanes 2

Then ``python benchmarks/study/report.py --figure docs/images/study_tail_f1.png`` writes the tables.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from reproduce import ROOT, cell_name, finished
from report import SEEDS, planned_cells

OUTPUT = Path("benchmarks/results/study")
OVERRIDES = ["--config", "examples/own_backbone.yaml"]


def cells() -> list[tuple[str, str, int]]:
    """(dataset, method, seed) in the grid's order: per block of a dataset, seed by seed."""
    ordered, planned = [], planned_cells()
    for dataset in dict.fromkeys(d for d, _ in planned):
        for seed in SEEDS:
            ordered += [(dataset, method, seed) for d, method in planned if d == dataset]
    return ordered


def lane(todo: queue.Queue, commit: bool, git_lock: threading.Lock) -> None:
    """Run cells from ``todo`` until it is empty; commit each finished one's run.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while True:
        try:
            dataset, method, seed = todo.get_nowait()
        except queue.Empty:
            return
        run_dir = OUTPUT / "runs" / cell_name(dataset, method, seed)
        command = [sys.executable, "benchmarks/study/reproduce.py", "--datasets", dataset, "--methods", method,
                   "--seeds", str(seed), "--output", str(OUTPUT), "--no-table", "--", *OVERRIDES]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"FAILED {run_dir.name}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}", flush=True)
            continue
        print(f"done {run_dir.name}", flush=True)
        if commit:
            with git_lock:
                subprocess.run(["git", "add", str(run_dir / "run.json")], cwd=ROOT, check=True)
                subprocess.run(["git", "commit", "-q", "-m", f"grid: {dataset} {method} seed {seed} (whole study)"],
                               cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", type=int, default=2, help="runs side by side (one torch thread each)")
    parser.add_argument("--no-commit", dest="commit", action="store_false", help="leave each run.json uncommitted")
    parser.add_argument("--list", action="store_true", help="print the cells not finished yet, run nothing")
    args = parser.parse_args(argv)
    todo: queue.Queue = queue.Queue()
    for cell in cells():
        if not finished(ROOT / OUTPUT / "runs" / cell_name(*cell)):
            todo.put(cell)
    print(f"{todo.qsize()} of {len(cells())} runs to go", flush=True)
    if args.list:
        print("\n".join(" ".join(map(str, cell)) for cell in todo.queue))
        return
    git_lock = threading.Lock()
    lanes = [threading.Thread(target=lane, args=(todo, args.commit, git_lock)) for _ in range(args.lanes)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()


if __name__ == "__main__":
    main()
