"""``lt-tuning report RUN_DIR [RUN_DIR ...] [--output report.md]``: finished runs side by side.

Reads each run folder's ``test_metrics.json`` alone (the newest below it, as
:func:`lt_tuning.results.read_test_metrics` finds it): no checkpoint, no dataset, no torch. Writes
a Markdown report with the metrics table (acc, macro F1, head/tail, many/medium/few-shot F1 with
their class counts, the tail-to-head share of the tail's errors, ECE), the most frequent
confusions of each run, one per-class F1 figure of all runs and each run's confusion matrix.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lt_tuning.results import read_test_metrics

DEFAULT_RATIO = 0.65  # the study's head/tail ratio, for runs that did not record theirs
SHOTS = ("many", "medium", "few")  # as lt_tuning.metrics.SHOTS, without importing torchmetrics
COLUMNS = {"acc": "Acc", "f1": "Macro F1", "head_f1": "Head F1", "tail_f1": "Tail F1",
           **{f"{shot}_f1": f"{shot.capitalize()} F1" for shot in SHOTS},
           "tail_to_head_share": "Tail errors → head", "ece": "ECE", "ece_before_temperature": "ECE before T"}


def load_runs(run_dirs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Run name -> its test metrics, for ``DIR`` or ``NAME=DIR`` arguments (a name defaults to
    the folder's name, made unique with its parent's)."""
    runs: dict[str, dict[str, Any]] = {}
    for argument in run_dirs:
        name, _, folder = argument.rpartition("=") if "=" in argument else ("", "", argument)
        path = Path(folder)
        if not path.is_dir():
            raise NotADirectoryError(f"{folder}: not a run folder (give the --trainer.default_root_dir of a fit).")
        name = name or path.resolve().name
        if name in runs:
            name = f"{path.resolve().parent.name}/{name}"
        if name in runs:
            raise ValueError(f"Two runs are named {name!r}: name them, NAME={folder}.")
        runs[name] = read_test_metrics(path)
    return runs


def class_order(metrics: dict[str, Any]) -> tuple[list[str], list[int]]:
    """A run's label names in class-index order and the per-class counts that split its head and
    tail (the figures order classes by them and draw that boundary, as the run's own plots do),
    else its training counts."""
    per_class = metrics["per_class_f1"]
    labels = metrics.get("labels") or [str(c) for c in range(len(per_class))]
    by_name = metrics.get("head_tail_counts", {}).get("counts")
    counts = [by_name.get(label, 0) for label in labels] if by_name else metrics.get("train_class_counts")
    if counts is None:
        raise ValueError("A test_metrics.json without head_tail_counts or train_class_counts: written by an older "
                         "lt-tuning; test the run's checkpoint again with this one.")
    return labels, [int(count) for count in counts]


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def metrics_table(runs: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of the runs' metrics, in percent; ``–`` where a run has no such value
    (an empty group, or a run from before the metric)."""
    header = ["run", *COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in runs.items():
        cells = [name]
        for key in COLUMNS:
            cell = _percent(metrics.get(key))
            shot = key.removesuffix("_f1")
            if shot in SHOTS and f"{shot}_classes" in metrics:
                cell += f" ({int(metrics[f'{shot}_classes'])})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def confusions_table(metrics: dict[str, Any], k: int = 10) -> str:
    """The run's ``k`` most frequent confusions as a Markdown table."""
    labels, _ = class_order(metrics)
    lines = ["| true | predicted | count |", "|---|---|---|"]
    for true, predicted, count in metrics.get("top_confusions", [])[:k]:
        true, predicted = (c if isinstance(c, str) else labels[c] for c in (true, predicted))  # names or indices
        lines.append(f"| {true} | {predicted} | {count} |")
    return "\n".join(lines) + "\n"


def write_report(runs: dict[str, dict[str, Any]], output: Path) -> list[Path]:
    """Write the report ``output`` and its figures beside it (``<stem>-*.png``); the files written."""
    from lt_tuning import plots  # matplotlib: only when writing

    labels, counts = class_order(next(iter(runs.values())))
    ratio = next(iter(runs.values())).get("head_tail_ratio", DEFAULT_RATIO)
    for name, metrics in runs.items():
        if class_order(metrics)[0] != labels:
            raise ValueError(f"Run {name!r} has other classes than {next(iter(runs))!r}: a report compares runs "
                             "of one dataset.")
    output.parent.mkdir(parents=True, exist_ok=True)
    stem, written = output.with_suffix(""), []
    names = list(runs)
    figure = plots.per_class_f1_figure({name: runs[name]["per_class_f1"] for name in names}, counts, ratio, labels)
    written.append(_save(figure, Path(f"{stem}-per_class_f1.png")))
    text = [f"# lt-tuning report: {len(runs)} run{'s' * (len(runs) != 1)}\n",
            "Test split; percent. Many/medium/few-shot: more than 100, 20 to 100, fewer than 20 training examples "
            "(unless the run set other thresholds), the bucket's class count in brackets. Tail errors → head: of "
            "the tail classes' misclassified examples, the share predicted as a head class. ECE: expected "
            "calibration error, 15 bins. –: an empty group, or a value the run did not record. Figures: classes "
            "by the counts that split each run's head and tail, the boundary dashed.\n\n",
            metrics_table(runs),
            f"\n## Per-class F1, classes head to tail\n\n![per-class F1]({written[0].name})\n"]
    for index, (name, metrics) in enumerate(runs.items()):
        text.append(f"\n## {name}\n")
        if metrics.get("top_confusions"):
            text.append("\nMost frequent confusions (true -> predicted):\n\n" + confusions_table(metrics))
        if metrics.get("confusion_matrix"):
            slug = re.sub(r"[^\w.-]+", "_", name) or str(index)
            figure = plots.confusion_matrix_figure(metrics["confusion_matrix"], counts, ratio, labels,
                                                   title=f"Confusion matrix of {name}")
            written.append(_save(figure, Path(f"{stem}-confusion-{slug}.png")))
            text.append(f"\n![confusion matrix of {name}]({written[-1].name})\n")
    output.write_text("".join(text), encoding="utf-8")
    return [output, *written]


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def main(args: list[str]) -> None:
    """Compare the runs of ``args`` in one Markdown report with its figures."""
    parser = argparse.ArgumentParser(prog="lt-tuning report", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a fit's folder (--trainer.default_root_dir), or NAME=FOLDER to name it in the report")
    parser.add_argument("--output", default="report.md", help="the Markdown file; figures go beside it")
    options = parser.parse_args(args)
    runs = load_runs(options.run_dirs)
    written = write_report(runs, Path(options.output))
    print(metrics_table(runs), end="")
    print(f"Wrote {written[0]} and {len(written) - 1} figure{'s' * (len(written) != 2)} beside it.")
