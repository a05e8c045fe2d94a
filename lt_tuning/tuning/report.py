"""The report of a study: trials.csv and trials.md, best.yaml and the best trial's test, Optuna's figures."""

from __future__ import annotations

import csv
import fcntl
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from lt_tuning.commands.lightning import build_cli
from lt_tuning.io import atomic_write_json, atomic_write_text
from lt_tuning.tuning.storage import masked
from lt_tuning.tuning.trial import BOOKKEEPING

if TYPE_CHECKING:
    from lt_tuning.tuning.study import Tuner


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial (surplus ones left out): number, state, value, minutes, values by config path."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue
        minutes = ((trial.datetime_complete - trial.datetime_start).total_seconds() / 60
                   if trial.datetime_complete and trial.datetime_start else None)
        row = {"number": trial.number, "state": trial.state.name, "value": trial.value,
               "minutes": None if minutes is None else round(minutes, 2)}
        row |= {name.split("@")[0]: value for name, value in trial.params.items()}
        row |= {key: trial.user_attrs.get(key) for key in ("worker", "run_dir", "error")}
        rows.append(row)
    return rows


@dataclass
class _Lock:
    path: Path

    def __enter__(self) -> None:
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


def write_report(tuner: Tuner) -> None:
    """Write the output folder's report (one worker at a time; the best trial tested once)."""
    out = tuner.output_dir
    with _Lock(out / ".report.lock"):
        rows = trial_rows(tuner.study)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with open(out / "trials.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        completed = [t for t in tuner.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best = tuner.study.best_trial if completed else None
        test = best_trial_test(tuner, best) if best else None
        atomic_write_text(out / "trials.md", trials_markdown(tuner, rows, best, test))
        write_figures(tuner.study, out, len(completed))


def best_config(tuner: Tuner, trial: FrozenTrial) -> dict[str, Any]:
    """The trial's complete ``fit`` config, its bookkeeping put back to the user's values."""
    config = yaml.safe_load((Path(trial.user_attrs["log_dir"]) / "config.yaml").read_text(encoding="utf-8"))
    config.pop("tune", None)
    for key in BOOKKEEPING:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = tuner.config[key]
    return config


def best_trial_test(tuner: Tuner, best: FrozenTrial) -> dict[str, Any] | None:
    """best.yaml, and the test of the best trial's best checkpoint (once: kept in best_test.json)."""
    out = tuner.output_dir
    config = best_config(tuner, best)
    atomic_write_text(out / "best.yaml", f"# trial {best.number}: {tuner.settings.objective}={best.value}\n"
                      + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    summary_path = out / "best_test.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary["trial"] == best.number:
            return summary
    checkpoint = best.user_attrs["best_checkpoint"]
    if not Path(checkpoint).is_file():
        warnings.warn(f"The best trial's checkpoint {checkpoint} is not on this machine ({best.user_attrs['worker']}): "
                      f"test it there: lt-tuning test --config {out / 'best.yaml'} --ckpt_path {checkpoint}")
        return None
    cli = build_cli(["test", "--config", str(out / "best.yaml"), f"--ckpt_path={checkpoint}",
                     f"--trainer.default_root_dir={out / 'best_test'}"])
    metrics = {key: value for key, value in cli.model.last_test_metrics.items() if isinstance(value, float)}
    summary = {"trial": best.number, "checkpoint": checkpoint, "log_dir": str(cli.trainer.log_dir), "metrics": metrics}
    atomic_write_json(summary_path, summary)
    return summary


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")


def trials_markdown(tuner: Tuner, rows: list[dict[str, Any]], best: FrozenTrial | None,
                    test: dict[str, Any] | None) -> str:
    settings = tuner.settings
    columns = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in ("run_dir", "error")]
    header = columns[:2] + [f"{settings.objective} (dev)"] + columns[3:]
    lines = [f"# Study {settings.study_name!r}: {settings.direction} {settings.objective}", "",
             f"Storage: `{masked(tuner.storage_url)}`; {len(rows)} trials.", ""]
    if best is not None:
        lines.append(f"Best: trial {best.number}, {settings.objective} = {best.value:.4f} (`best.yaml`).")
    if test is not None:
        lines.append("Its test: " + ", ".join(f"{key} {value:.4f}" for key, value in test["metrics"].items()) + ".")
    if rows:
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    failed = [row for row in rows if row.get("error")]
    if failed:
        lines += ["", "Failed trials:", ""] + [f"- {row['number']}: {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def write_figures(study: optuna.Study, out: Path, completed: int) -> None:
    """Optuna's optimization history and (from 2 finished trials) parameter importances, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    from lt_tuning.plots import save_figure

    figures = {"optimization_history.png": plots.plot_optimization_history}
    if completed >= 2 and study.best_trial.params:
        figures["param_importances.png"] = plots.plot_param_importances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in figures.items():
            axes = plot(study)
            save_figure(axes.figure, out / name)
            matplotlib.pyplot.close(axes.figure)
