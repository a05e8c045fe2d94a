"""Tail F1 against the backbone's pretraining budget: does prompt-tuning's tail advantage grow?

Reads the tables that ``benchmarks/study/reproduce.py`` wrote for each pretraining budget
(``<curve>/tokens_<N>/table.json``, N = tokens the backbone was pretrained on) and, where given,
each budget's ``pretraining_report.json`` (held-out masked-token accuracy). Writes
``budget_curve.png`` (one panel per dataset, tail F1 against tokens on a log axis with budget 0
at the left, one line per method, each seed a dot) and ``budget_curve.{json,md}`` (the numbers,
with the prompt - CLS gap per budget: of the means, and per seed, a seed's prompt run against its CLS run)::

    python benchmarks/study/plot_budget_curve.py --curve benchmarks/results/budget_curve \\
        --budgets benchmarks/results/backbone_budgets --report examples/backbone/pretraining_report.json \\
        --output docs/images
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from lt_tuning.io import atomic_write_json, atomic_write_text
from lt_tuning.plots import save_figure

GAP = ("prompt_tuning", "cls_tuning_tanh")  # the gap the study's claim is about: prompt - CLS


def collect(curve: Path, budgets: Path | None, reports: list[Path] = ()) -> list[dict]:
    """One row per (dataset, method, budget): tail F1 of each seed, and the budget's held-out accuracy
    (from ``budgets/<N>/pretraining_report.json``, or a report in ``reports`` with ``tokens_seen`` N)."""
    found = {json.loads(path.read_text())["tokens_seen"]: path for path in reports}
    found.update({int(path.parent.name): path for path in (budgets.glob("*/pretraining_report.json") if budgets else ())})
    rows = []
    for table in sorted(curve.glob("tokens_*/table.json")):
        tokens = int(table.parent.name.removeprefix("tokens_"))
        accuracy = json.loads(found[tokens].read_text()) if tokens in found else {}
        for row in json.loads(table.read_text()):
            rows.append({
                "dataset": row["dataset"], "method": row["method"], "tokens": tokens,
                "seeds": row["seeds"], "tail_f1": row["tail_f1"]["values"], "tail_f1_mean": row["tail_f1"]["mean"],
                "heldout_mlm_acc": {lang: accuracy[f"heldout_mlm_acc_{lang}"] for lang in ("zh", "en")
                                    if f"heldout_mlm_acc_{lang}" in accuracy},
            })
    if not rows:
        raise FileNotFoundError(f"No tokens_<N>/table.json under {curve}: run benchmarks/study/reproduce.py per budget first.")
    return sorted(rows, key=lambda row: (row["dataset"], row["method"], row["tokens"]))


def gaps(rows: list[dict]) -> list[dict]:
    """Prompt - CLS tail F1 for each dataset and budget that has both: of the means over seeds
    (``gap``), and seed by seed for the seeds both have (``gap_by_seed``)."""
    cells = {(row["dataset"], row["method"], row["tokens"]): row for row in rows}
    found = []
    for (dataset, method, tokens), prompt in cells.items():
        cls = cells.get((dataset, GAP[1], tokens))
        if method != GAP[0] or cls is None:
            continue
        cls_by_seed = dict(zip(cls["seeds"], cls["tail_f1"]))
        found.append({"dataset": dataset, "tokens": tokens, "heldout_mlm_acc": prompt["heldout_mlm_acc"],
                      "gap": prompt["tail_f1_mean"] - cls["tail_f1_mean"],
                      "gap_by_seed": {seed: value - cls_by_seed[seed]
                                      for seed, value in zip(prompt["seeds"], prompt["tail_f1"]) if seed in cls_by_seed}})
    return found


def figure(rows: list[dict]) -> Figure:
    """One panel per dataset; budget 0 sits on the linear stretch of a symlog axis."""
    datasets = sorted({row["dataset"] for row in rows})
    fig = Figure(figsize=(5 * len(datasets), 3.6), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    smallest = min((row["tokens"] for row in rows if row["tokens"] > 0), default=1)
    for ax, dataset in zip(axes, datasets):
        for method in sorted({row["method"] for row in rows if row["dataset"] == dataset}):
            line = [row for row in rows if row["dataset"] == dataset and row["method"] == method]
            tokens = [row["tokens"] for row in line]
            (drawn,) = ax.plot(tokens, [100 * row["tail_f1_mean"] for row in line], marker="o", label=method)
            for row in line:
                ax.scatter([row["tokens"]] * len(row["tail_f1"]), [100 * v for v in row["tail_f1"]],
                           s=10, alpha=0.4, color=drawn.get_color())
        ax.set_xscale("symlog", linthresh=smallest)
        ax.set_title(dataset.upper())
        ax.set_xlabel("pretraining tokens (log; 0 = random init)")
        ax.set_ylabel("test tail F1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def points(fraction: float) -> str:
    """A signed difference in points of F1, one decimal; a gap that rounds to zero reads +0.0, not -0.0."""
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curve", type=Path, required=True, help="folder of tokens_<N>/table.json")
    parser.add_argument("--budgets", type=Path, help="folder of <N>/pretraining_report.json")
    parser.add_argument("--report", type=Path, action="append", default=[],
                        help="another pretraining_report.json (e.g. the final backbone's)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = collect(args.curve, args.budgets, args.report)
    save_figure(figure(rows), args.output / "budget_curve.png")
    lines = ["| dataset | tokens | held-out acc zh / en | prompt - CLS tail F1 | by seed |", "|---|---|---|---|---|"]
    found = gaps(rows)
    for gap in found:
        acc = " / ".join(f"{100 * v:.1f}" for v in gap["heldout_mlm_acc"].values()) or "-"
        by_seed = ", ".join(f"{seed}: {points(value)}" for seed, value in gap["gap_by_seed"].items())
        lines.append(f"| {gap['dataset']} | {gap['tokens']:,} | {acc} | {points(gap['gap'])} | {by_seed} |")
    atomic_write_json(args.output / "budget_curve.json", {"rows": rows, "gaps": found})
    atomic_write_text(args.output / "budget_curve.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
