"""What a search costs: (a) one trial inside ``lt-tuning tune`` against the same ``lt-tuning fit`` alone,
(b) 1 worker against 2 workers on one study, in trials per hour.

Both on CMID with the own backbone (examples/backbone), short budgets, each process 1 torch
thread, every command a fresh ``lt-tuning`` process as a user starts it. (a) times whole commands
(start-up, fit, the test of the best checkpoint; tune also writes its report), interleaved
A B, B A, ...; the figure is the median ratio (goal: <= 1.05). (b) runs the same 8-trial study
with one worker and with two started together (2 cores here), first one then the other.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C

NAME = "tune"
SPACE = "{model.init_args.learning_rate: {choices: [5.0e-4, 1.0e-3, 2.0e-3, 3.0e-4]}}"


def fit_args(data_dir: Path, cache: Path, steps: int) -> list[str]:
    return ["--config", "examples/data/cmid.yaml", "--config", "examples/methods/prompt_tuning.yaml",
            "--config", "examples/own_backbone.yaml", f"--data.init_args.data_dir={data_dir}",
            f"--data.init_args.cache_dir={cache}", f"--trainer.max_steps={steps}",
            f"--trainer.val_check_interval={steps // 2}", "--trainer.enable_progress_bar=false",
            "--plots.enabled=false"]


def command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("lt-tuning")), *args]


def run(cmd: list[str], log: Path) -> float:
    """Seconds of one command (1 torch thread), which must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(cmd, cwd=C.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    assert result.returncode == 0, f"{' '.join(cmd)} failed: see {log}"
    return time.perf_counter() - started


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--steps", type=int, default=60, help="training steps of (a)'s fit and trial")
    parser.add_argument("--trial-steps", type=int, default=20, help="training steps of each of (b)'s trials")
    parser.add_argument("--trials", type=int, default=8, help="trials of (b)'s study")
    args = parser.parse_args()
    started, env = C.start(args)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=C.ROOT, capture_output=True, text=True)
    with C.workdir() as work:
        cache = work / "cache"
        run(command("fit", *fit_args(args.data_dir, cache, 2), f"--trainer.default_root_dir={work / 'warm'}"),
            work / "warm.log")  # tokenizes CMID once into the cache both sides share

        # (a) the same fit, alone and as the one trial of a study (whose report tests the best trial)
        runs = iter(range(1000))
        times = C.interleaved({
            "fit": lambda: run(command("fit", *fit_args(args.data_dir, cache, args.steps),
                                       f"--trainer.default_root_dir={work / 'fit'}"), work / "fit.log"),
            "tune": lambda: run(command("tune", *fit_args(args.data_dir, cache, args.steps), "--tune.n_trials=1",
                                        f"--tune.output_dir={work / f'tune{next(runs)}'}",
                                        "--tune.space={model.init_args.learning_rate: {choices: [5.0e-4]}}"),
                                work / "tune.log"),
        }, repeats=args.repeats, warmup=0)
        ratios = C.paired_ratios(times["tune"], times["fit"])

        # (b) one study of N short trials: 1 worker, then 2 workers started together
        per_hour = {}
        for workers in (1, 2):
            out = work / f"study{workers}"
            cmd = command("tune", *fit_args(args.data_dir, cache, args.trial_steps), f"--tune.n_trials={args.trials}",
                          f"--tune.output_dir={out}", f"--tune.space={SPACE}", "--tune.pruner=none")
            begin = time.perf_counter()
            procs = [subprocess.Popen(cmd, cwd=C.ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                      stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(f".{i}.log"), "w"))
                     for i in range(workers)]
            assert all(proc.wait() == 0 for proc in procs), f"a worker failed: see {out}.*.log"
            per_hour[workers] = args.trials / ((time.perf_counter() - begin) / 3600)
            shutil.rmtree(out / "trials")

    fields = {
        "commit": commit.stdout.strip(),
        "overhead": {"fit_s": C.summary(times["fit"], 1), "tune_s": C.summary(times["tune"], 1),
                     "tune_over_fit": C.summary(ratios, 3), "goal": 1.05},
        "workers": {"trials": args.trials, "trial_steps": args.trial_steps,
                    "trials_per_hour": {str(k): round(v, 1) for k, v in per_hour.items()},
                    "speedup_2_over_1": round(per_hour[2] / per_hour[1], 2)},
    }
    markdown = "\n".join([
        f"# `lt-tuning tune`: overhead and workers ({env['cpu']}, {os.cpu_count()} cores, 1 torch thread a process, "
        f"commit {fields['commit']})",
        "", "(a) one trial inside `tune` against the same `fit` alone (whole commands, "
        f"CMID, own backbone, {args.steps} steps):", "",
        C.markdown_table(["fit (s)", "tune, 1 trial (s)", "tune / fit (median)", "goal"],
                         [[statistics.median(times["fit"]), statistics.median(times["tune"]),
                           statistics.median(ratios), "<= 1.05"]]),
        "", f"(b) a study of {args.trials} trials of {args.trial_steps} steps:", "",
        C.markdown_table(["workers", "trials per hour"], [[k, v] for k, v in per_hour.items()]),
        "", f"2 workers over 1: x{per_hour[2] / per_hour[1]:.2f}.",
    ])
    C.write_results(NAME, args, env, started, markdown, **fields)


if __name__ == "__main__":
    main()
