"""Run datasets x methods x seeds through ``lt-tuning fit`` and write the study-style table.

Each cell is ``--config examples/data/<dataset>.yaml --config examples/methods/<method>.yaml``
plus the overrides given after ``--``, run in its own process under ``<output>/runs/``.
A finished run's ``run.json`` holds its command (paths relative to the repository), its test metrics
and a ``record`` of what the result depends on (commit, clean tree, sha256 of the configs, backbone
and data files, threads, versions, CPU: ``record.py``), so the committed results are the whole
record, a sweep (interrupted, or on a new clone) skips the runs it has, and ``rerun.py`` repeats a
run and names what differs. A tree with uncommitted changes is refused unless ``--allow-dirty``.
The table (mean (std) over seeds of Acc / F1 / head F1 / tail F1) goes to ``<output>/table.md``
and ``table.json``, with the exact command in ``<output>/command.txt`` (``--no-table``: none, for a
driver that runs one cell a call, as ``grid.py`` does; ``report.py`` writes its tables).

Every run uses the study's definitions, so the table sits beside the paper's (``STUDY_DEFINITIONS``,
passed before the overrides): macro F1 over the classes present in the evaluated split
(scikit-learn's), head/tail classes by each evaluated split's own frequencies. The library's
defaults are the same; naming them here keeps the table's meaning if a default changes.

Example (the committed own-backbone table, benchmarks/results/own_backbone/)::

    python benchmarks/study/reproduce.py --datasets cmid ctc \\
        --methods cls_tuning_tanh cls_tuning_pt_ln prompt_tuning --seeds 775 776 777 \\
        --output benchmarks/results/own_backbone -- \\
        --data.init_args.model_name_or_path examples/backbone --data.init_args.data_dir ...
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from lt_tuning.io import atomic_write_json, atomic_write_text
from lt_tuning.results import aggregate_runs, read_test_metrics, write_table
from record import run_record

ROOT = Path(__file__).resolve().parents[2]
STUDY_DEFINITIONS = ["--model.init_args.f1_over", "present", "--data.init_args.head_tail_from", "eval"]


def config_path(kind: str, name: str) -> Path:
    """``examples/<kind>/<name>.yaml``, or ``name`` itself when it is a path."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else ROOT / "examples" / kind / f"{name}.yaml"


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: a ``run.json`` with its test metrics."""
    return (run_dir / "run.json").is_file() and "f1" in json.loads((run_dir / "run.json").read_text())


def cell_name(dataset: str, method: str, seed: int) -> str:
    """A cell's run folder name, ``<dataset>-<method>-<seed>`` (names or config paths' stems)."""
    return f"{Path(dataset).stem}-{Path(method).stem}-{seed}"


def die_with_parent() -> None:
    """A run's ``preexec_fn`` (Linux): SIGKILL when the process that started it dies, so that a
    killed grid worker leaves no run going on beside the one its cell is queued again for."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def repo_path(path: Path) -> str:
    """``path`` relative to the repository when inside it, so that a recorded command runs from any clone."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def run_cell(dataset: str, method: str, seed: int, run_dir: Path, overrides: list[str],
             allow_dirty: bool = False) -> None:
    """One ``lt-tuning fit`` (then test) in a subprocess, logging into ``run_dir``; its ``run.json``
    gets the command, the test metrics and the record of what the result depends on (``record.py``).
    Refuses to run from a tree with changes outside the grid's output unless ``allow_dirty``."""
    if finished(run_dir):
        print(f"done already: {run_dir}", flush=True)
        return
    cli_args = [
        "fit", "--config", repo_path(config_path("data", dataset)),
        "--config", repo_path(config_path("methods", method)),
        "--seed_everything", str(seed), "--trainer.default_root_dir", repo_path(run_dir),
        "--trainer.enable_progress_bar", "false", *STUDY_DEFINITIONS, *overrides,
    ]
    record = run_record(cli_args, ROOT, allow_dirty, exclude=run_dir.parent.parent)  # <output>/runs/<cell>
    if not (record["git"]["clean"] or allow_dirty):
        raise SystemExit("Uncommitted changes: a run from this tree would not reproduce from its commit "
                         "(commit them, or pass --allow-dirty):\n"
                         + "\n".join(record["git"]["changes"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lt_tuning.cli", *cli_args]
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w", encoding="utf-8") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                       preexec_fn=die_with_parent if sys.platform == "linux" else None)
    seconds = time.perf_counter() - start
    atomic_write_json(run_dir / "run.json", {
        "dataset": dataset, "method": method, "seed": seed, "seconds": round(seconds, 1),
        "command": shlex.join(command[1:]), **read_test_metrics(run_dir),  # the metrics join the record
        "record": record,
    })
    print(f"{dataset} {method} seed {seed}: {seconds:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", required=True, help="names in examples/data or YAML paths")
    parser.add_argument("--methods", nargs="+", required=True, help="names in examples/methods or YAML paths")
    parser.add_argument("--seeds", nargs="+", type=int, default=[775, 776, 777])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a tree with uncommitted changes (recorded in each run.json)")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: the table of the finished runs, naming the cells' runs still missing")
    parser.add_argument("--no-table", dest="table", action="store_false",
                        help="run the cells, write no table (a driver's single cells)")
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1 :]
    run_dirs, missing = [], []
    for dataset in args.datasets:
        for method in args.methods:
            for seed in args.seeds:
                run_dir = args.output / "runs" / cell_name(dataset, method, seed)
                if args.table_only and not finished(run_dir):
                    missing.append(run_dir.name)
                    continue
                run_cell(Path(dataset).stem, Path(method).stem, seed, run_dir, overrides, args.allow_dirty)
                run_dirs.append(run_dir)
    if not args.table:
        return
    rows = aggregate_runs(run_dirs)
    command = shlex.join(["python", "benchmarks/study/reproduce.py", *(arg for arg in argv if arg != "--table-only")])
    atomic_write_text(args.output / "command.txt", command + "\n")
    seconds = sum(json.loads((d / "run.json").read_text())["seconds"] for d in run_dirs)
    preamble = f"Command: `{command}`\n\nRuns: {len(run_dirs)}, {seconds / 60:.1f} min of training and testing.\n\n"
    if missing:
        preamble += f"Not run yet ({len(missing)}; the command runs them): {', '.join(missing)}.\n\n"
    json_path, md_path = write_table(rows, args.output / "table", preamble=preamble)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
