"""What a search finds on CMID: its best config, refit with 3 seeds, against the default prompt-tuning config.

Benchmark 9(c). First the search (20 trials over method and learning rate by dev macro F1, on the
own backbone; 2 workers here, each 1 torch thread), from the repository root::

    LT_TUNING_DATA=../shared/data lt-tuning tune --config examples/data/cmid.yaml \\
        --config examples/own_backbone.yaml --config examples/tune/cmid.yaml

then this script refits its ``best.yaml`` with seeds 775-777 (one fresh ``lt-tuning fit`` each,
the study's definitions as ``benchmarks/study/reproduce.py`` gives them) and sets the test macro
F1 and tail F1, mean (population std), beside the default prompt-tuning config's study runs of the
same seeds (``benchmarks/results/study/runs/cmid-prompt_tuning-77[5-7]``). The search's
``trials.md`` and ``best.yaml`` are kept beside the result (``results/tune_quality/``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _common as C

sys.path.insert(0, str(Path(__file__).parent / "study"))
from reproduce import STUDY_DEFINITIONS  # noqa: E402  (the study's scripts' folder)

from lt_tuning.results import aggregate_runs  # noqa: E402

NAME = "tune_quality"
SEEDS = (775, 776, 777)
DEFAULT_RUNS = C.ROOT / "benchmarks" / "results" / "study" / "runs"


def refit(best: Path, seed: int, run_dir: Path) -> subprocess.Popen:
    """``lt-tuning fit --config best.yaml`` with ``seed`` in a fresh process (1 torch thread)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({"dataset": "cmid", "method": "tuned", "seed": seed}))
    cmd = [str(Path(sys.executable).with_name("lt-tuning")), "fit", "--config", str(best), f"--seed_everything={seed}",
           f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false", *STUDY_DEFINITIONS]
    return subprocess.Popen(cmd, cwd=C.ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=open(run_dir / "fit.log", "w"))


def cell(row: dict, metric: str) -> str:
    return f"{100 * row[metric]['mean']:.1f} ({100 * row[metric]['std']:.1f})"


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--tune-dir", default="tune/cmid", help="the search's output_dir (from the repository root)")
    parser.add_argument("--parallel", type=int, default=2, help="refits at a time")
    args = parser.parse_args()
    started, env = C.start(args)
    tune_dir = C.ROOT / args.tune_dir
    best = tune_dir / "best.yaml"
    header = best.read_text(encoding="utf-8").splitlines()[0]  # "# trial N: val/f1=..."
    kept = args.results_dir / NAME
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("best.yaml", "trials.md"):
        shutil.copyfile(tune_dir / name, kept / name)
    with C.workdir() as work:
        runs = [work / f"seed{seed}" for seed in SEEDS]
        for start in range(0, len(SEEDS), args.parallel):
            procs = [refit(best, seed, run) for seed, run in zip(SEEDS[start:], runs[start:start + args.parallel])]
            assert all(proc.wait() == 0 for proc in procs), f"a refit failed: see {work}/seed*/fit.log"
        [tuned] = aggregate_runs(runs)
        [default] = aggregate_runs(DEFAULT_RUNS / f"cmid-prompt_tuning-{seed}" for seed in SEEDS)
    number, dev = header.removeprefix("# trial ").split(": ")  # "# trial N: val/f1=0.1234..."
    found = f"trial {number}, dev {dev.split('=')[0]} {100 * float(dev.split('=')[1]):.1f}"
    with open(tune_dir / "trials.csv", encoding="utf-8") as handle:
        [chosen] = [row for row in csv.DictReader(handle) if row["number"] == number]
    method = f"{chosen['method']}, learning rate {float(chosen['model.init_args.learning_rate']):.2g}"
    fields = {"search": {"best": found, "method": method, "tune_dir": args.tune_dir},
              "seeds": list(SEEDS), "tuned": tuned, "default_prompt_tuning": default}
    rows = [[f"best of the search ({found})", cell(tuned, "f1"), cell(tuned, "tail_f1")],
            ["default prompt-tuning (`examples/methods/prompt_tuning.yaml`)", cell(default, "f1"),
             cell(default, "tail_f1")]]
    markdown = "\n".join([
        f"# 9(c) The search's best config on CMID against the default ({env['cpu']}, 1 torch thread a run)", "",
        f"Test %, mean (population std) over seeds {SEEDS[0]}-{SEEDS[-1]}, the study's definitions; the best "
        f"config: `{method}`, the rest in `{NAME}/best.yaml`; every trial in `{NAME}/trials.md`.", "",
        C.markdown_table(["config", "macro F1", "tail F1"], rows),
    ])
    C.write_results(NAME, args, env, started, markdown, **fields)


if __name__ == "__main__":
    main()
