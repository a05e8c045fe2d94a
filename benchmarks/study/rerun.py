"""Rerun finished runs from their ``run.json`` and say whether the test metrics come out the same, bit for bit.

    python benchmarks/study/rerun.py benchmarks/results/final_backbone/runs/cmid-prompt_tuning-775 [RUN_DIR ...]

Each run's recorded command (``-m lt_tuning.cli fit ...``) runs again from the repository root,
logging into ``<output>/<grid>-<run>/`` (``--output``, default a new temporary folder). Relative paths
are the repository's; an absolute path into another checkout (``/work/wt-grid/examples/...``, from
before commands were recorded relative) becomes the same path in this one. The run gets the recorded
torch threads and OMP/MKL variables; 1 thread (``OMP_NUM_THREADS=1``) where ``run.json`` has no
record, as the grids ran. The rerun's acc, f1, head_f1, tail_f1 and per_class_f1 are compared with
the recorded ones; where ``run.json`` has a ``record``, it is built again now and every commit,
checksum, version, thread setting or config value that differs is listed: what to look at when the
figures differ. Prints and writes ``<output>/rerun.json`` and ``rerun.md``; exits 1 if any run
differs, unless ``--no-fail``. ``--checkout DIR`` runs with the code and files of another checkout,
e.g. one at the run's recorded commit (``git worktree add /tmp/at-COMMIT COMMIT``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lt_tuning.io import atomic_write_json, atomic_write_text
from lt_tuning.results import read_test_metrics
from record import ROOT, THREAD_ENV, diff_records, run_record
from reproduce import repo_path

METRICS = ("acc", "f1", "head_f1", "tail_f1", "per_class_f1")


def repo_arg(arg: str, root: Path = ROOT) -> str:
    """An absolute path outside the checkout ``root`` whose tail is a path in it (``/work/wt-grid/examples/x.yaml``)
    as that checkout-relative path (``examples/x.yaml``); any other argument as it is."""
    path = Path(arg)
    if not path.is_absolute() or path.is_relative_to(root):
        return arg
    for start in range(1, len(path.parts)):
        if (root / Path(*path.parts[start:])).exists():
            return Path(*path.parts[start:]).as_posix()
    return arg


def rerun_args(command: str, log_dir: Path, root: Path = ROOT) -> list[str]:
    """The recorded command's arguments (after the interpreter), paths mapped by :func:`repo_arg`,
    logging into ``log_dir``."""
    args = [repo_arg(arg, root) for arg in shlex.split(command)]
    args[args.index("--trainer.default_root_dir") + 1] = str(log_dir)
    return args


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The compared test metrics, per-class F1 one entry per class (``per_class_f1[3]``)."""
    flat: dict[str, float] = {}
    for name in METRICS:
        value = metrics.get(name)
        if isinstance(value, list):
            flat.update({f"{name}[{index}]": item for index, item in enumerate(value)})
        elif value is not None:
            flat[name] = value
    return flat


def compare_metrics(recorded: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """The recorded metrics (those ``recorded`` has) that the rerun does not give exactly, the
    largest absolute difference, and ``identical`` when none differs."""
    old, new = flat_metrics(recorded), flat_metrics(rerun)
    names = [name for name in {**old, **new} if name.split("[")[0] in recorded]
    differing = [name for name in names if old.get(name) != new.get(name)]
    diffs = [abs(new[name] - old[name]) for name in names if name in old and name in new]
    return {"compared": len(names), "differing": differing, "max_abs_diff": max(diffs, default=0.0),
            "identical": not differing}


def use_threads(record: dict[str, Any] | None) -> None:
    """Give this process, and the run it starts, the recorded torch threads and OMP/MKL variables;
    1 thread where there is no record."""
    import torch

    machine = record["machine"] if record else {"torch_threads": 1, "thread_env": {}}
    for key in [key for key in os.environ if key.startswith(THREAD_ENV)]:
        del os.environ[key]
    os.environ.update({"OMP_NUM_THREADS": str(machine["torch_threads"]), **machine["thread_env"]})
    torch.set_num_threads(machine["torch_threads"])


def rerun(run_dir: Path, log_dir: Path, checkout: Path = ROOT) -> dict[str, Any]:
    """Run ``run_dir``'s recorded command again with the code and files of ``checkout``, logging
    into ``log_dir``: recorded and rerun metrics, their comparison, and what differs between the
    run's record and now."""
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    record = run.get("record")
    use_threads(record)
    args = rerun_args(run["command"], log_dir, checkout)
    now = run_record(args[2:], checkout, allow_dirty=True, exclude=log_dir) if record else None  # args[2:]: after -m
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_dir / "log.txt", "w", encoding="utf-8") as log:  # `-m` imports lt_tuning from the cwd first
        if subprocess.run([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, cwd=checkout).returncode:
            raise SystemExit(f"{run_dir}: the rerun failed, see {log_dir / 'log.txt'}")
    metrics = read_test_metrics(log_dir)
    return {
        "run": repo_path(run_dir), "command": shlex.join(args), "seconds": round(time.perf_counter() - start, 1),
        "recorded": {name: run[name] for name in METRICS if name in run},
        "rerun": {name: metrics[name] for name in METRICS if name in metrics},
        **compare_metrics(run, metrics),
        "record_differences": diff_records(record, now) if record else None,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """Recorded / rerun figures (%) per run, the verdict, then what differs, run by run."""
    lines = ["| run | acc | F1 | head F1 | tail F1 | per-class F1 | max abs diff | result |", "|" + "---|" * 8]
    for result in results:
        recorded, rerun = result["recorded"], result["rerun"]
        cells = [f"{100 * recorded[m]:.4f} / {100 * rerun.get(m, float('nan')):.4f}" if m in recorded else "-"
                 for m in METRICS[:4]]
        per_class = sum(name.startswith("per_class_f1") for name in result["differing"])
        cells.append(f"{len(recorded['per_class_f1'])} classes, {per_class} differ"
                     if "per_class_f1" in recorded else "not recorded")
        verdict = "identical" if result["identical"] else "**differs**"
        lines.append(f"| {result['run']} | " + " | ".join(cells) + f" | {result['max_abs_diff']:.3g} | {verdict} |")
    lines += ["", "Recorded / rerun, test set, %. identical: every recorded figure is the same float again.", ""]
    for result in results:
        if result["differing"]:
            lines.append(f"- `{result['run']}` differs in: {', '.join(result['differing'])}")
        if result["record_differences"] is None:
            lines.append(f"- `{result['run']}`: run.json has no record (it predates them): the original run's "
                         "commit, checksums and versions are unknown")
        else:
            changed = result["record_differences"] or ["nothing"]
            lines.append(f"- `{result['run']}`: record then -> now differs in:\n" + "\n".join(
                f"  - {line}" for line in changed))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="folders holding a run.json")
    parser.add_argument("--output", type=Path, help="where reruns log and the report goes (default: a temp folder)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a run differs")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="run with this checkout's code and files, e.g. the run's commit: "
                             "`git worktree add /tmp/at-COMMIT COMMIT` (default: this one)")
    args = parser.parse_args(argv)
    output = (args.output or Path(tempfile.mkdtemp(prefix="lt_rerun_"))).resolve()
    results = [rerun(run_dir, output / f"{run_dir.resolve().parent.parent.name}-{run_dir.name}", args.checkout.resolve())
               for run_dir in args.run_dirs]
    report = markdown(results)
    atomic_write_json(output / "rerun.json", results)
    atomic_write_text(output / "rerun.md", report)
    print(report + f"\nwrote {output / 'rerun.json'} and {output / 'rerun.md'}")
    return 0 if args.no_fail or all(result["identical"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
