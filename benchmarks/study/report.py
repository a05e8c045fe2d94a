"""The whole study on the own backbone beside the paper: its three tables, rank agreement, its claims.

Reads the finished runs of the whole-study grid (``benchmarks/results/study/runs/*/run.json``,
written by ``reproduce.py``) and writes

- ``report.md`` / ``report.json``: the paper's main table, analysis table and head/tail table in
  its layout (rows = methods, columns = dataset x metric), ours as mean (std) over seeds with the
  paper's figure in brackets (``../shared/reference/PAPER.md``, the study's definitions on both
  sides); per dataset Kendall's tau-b between our ordering of the methods and the paper's, by
  macro F1 and by tail F1, with the method pairs in agreement; each of the study's claims answered
  per dataset; the remedies against the method they modify and against prompt-tuning;
- with ``--data_dir`` (or ``$LT_TUNING_DATA``): many/medium/few-shot F1 of each run from its
  per-class F1 and the training counts, and prompt-tuning's advantage over CLS-tuning per bucket;
- ``--figure``: tail F1 of every method, one panel per dataset, each seed a dot, the
  prompt-tuning mean as a dashed line.

A claim "A beats B" compares the means over seeds, d = mean(A) - mean(B), with its noise,
se = sqrt(s_A^2/n_A + s_B^2/n_B) (sample std over seeds): "holds" when d > 2 se, "does not hold"
when d < -2 se, else "within seed noise". A claim of no gain ("A does not help over B") holds
unless d > 2 se; one of no change ("A changes little") holds when |d| <= 2 se. Cells with fewer
than two seeds are not judged. Missing cells show as "-" and are listed::

    python benchmarks/study/report.py --runs benchmarks/results/study/runs \\
        --output benchmarks/results/study --figure docs/images/study_tail_f1.png --data_dir ../shared/data
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lt_tuning.io import atomic_write_json, atomic_write_text
from lt_tuning.plots import save_figure
from lt_tuning.results import aggregate_runs, load_run

DATASETS = ("cmid", "ctc", "r52")
SEEDS = (775, 776, 777)
MAIN = {"cls_tuning_tanh": "CLS-tuning (T)", "cls_tuning_eta_norm": "w/ eta-norm", "cls_tuning_focal": "w/ focal loss",
        "prompt_tuning": "Prompt-tuning", "prompt_tuning_focal": "w/ focal loss"}
ANALYSIS = {"cls_tuning_relu": "CLS-tuning (R)", "cls_tuning_prompt": "w/ prompt", "cls_tuning_ln": "w/ LN",
            "cls_tuning_pt_ln": "w/ pt. LN", "prompt_tuning": "Prompt-tuning", "prompt_tuning_ed": "w/ ed."}
STUDY = {**MAIN, **ANALYSIS}
REMEDY_NAMES = {"logit_adjusted": "logit-adjusted loss", "posthoc_la": "post-hoc logit adj.",
                "class_balanced": "class-balanced loss", "tau_norm": "tau-norm", "soft_prompt": "soft prompt"}
REMEDIES = {f"{base}_{key}": (base, f"{'CLS' if base == 'cls_tuning' else 'Prompt'}-tuning w/ {name}")
            for base in ("cls_tuning", "prompt_tuning") for key, name in REMEDY_NAMES.items()}
REMEDY_BASE = {"cls_tuning": "cls_tuning_tanh", "prompt_tuning": "prompt_tuning"}  # the remedies' configs start from these
LABELS = {**STUDY, **{"cls_tuning_eta_norm": "CLS-tuning (T) w/ eta-norm", "cls_tuning_focal": "CLS-tuning (T) w/ focal loss",
                      "prompt_tuning_focal": "Prompt-tuning w/ focal loss", "cls_tuning_prompt": "CLS-tuning (R) w/ prompt",
                      "cls_tuning_ln": "CLS-tuning (R) w/ LN", "cls_tuning_pt_ln": "CLS-tuning (R) w/ pt. LN",
                      "prompt_tuning_ed": "Prompt-tuning w/ ed."},
          **{method: label for method, (_, label) in REMEDIES.items()}}

# The paper's test figures, % (PAPER.md: mean over 5 seeds, BERT-base; the main and analysis tables give
# Acc and macro F1; the head/tail table head and tail F1 for three methods). eta-norm and focal loss are
# the main table's tanh rows, as our configs (the analysis table's relu rows of them are not run here).
PAPER_ACC_F1 = {
    "cls_tuning_tanh": {"cmid": (51.1, 37.3), "ctc": (84.6, 77.2), "r52": (95.3, 67.3)},
    "cls_tuning_eta_norm": {"cmid": (51.1, 37.4), "ctc": (84.7, 77.3), "r52": (95.4, 68.9)},
    "cls_tuning_focal": {"cmid": (51.0, 42.1), "ctc": (84.3, 78.5), "r52": (95.7, 72.8)},
    "prompt_tuning": {"cmid": (49.3, 43.4), "ctc": (84.2, 80.9), "r52": (95.7, 85.3)},
    "prompt_tuning_focal": {"cmid": (48.6, 42.5), "ctc": (83.5, 80.2), "r52": (95.5, 82.6)},
    "cls_tuning_relu": {"cmid": (50.9, 34.5), "ctc": (84.4, 77.1), "r52": (94.2, 56.2)},
    "cls_tuning_prompt": {"cmid": (49.7, 33.1), "ctc": (84.6, 77.2), "r52": (94.1, 54.5)},
    "cls_tuning_ln": {"cmid": (51.3, 42.0), "ctc": (84.6, 79.4), "r52": (96.1, 77.7)},
    "cls_tuning_pt_ln": {"cmid": (50.8, 42.5), "ctc": (84.4, 79.7), "r52": (96.2, 82.0)},
    "prompt_tuning_ed": {"cmid": (49.4, 43.6), "ctc": (84.2, 80.5), "r52": (95.7, 84.9)},
}
PAPER_HEAD_TAIL = {
    "cls_tuning_focal": {"cmid": (49.8, 40.2), "ctc": (87.5, 75.9), "r52": (99.0, 72.3)},
    "prompt_tuning": {"cmid": (48.4, 42.2), "ctc": (87.4, 79.0), "r52": (98.6, 85.0)},
    "prompt_tuning_focal": {"cmid": (47.1, 41.4), "ctc": (86.7, 78.3), "r52": (98.8, 82.3)},
}


def planned_cells() -> list[tuple[str, str]]:
    """The grid's (dataset, method) cells, in the order it runs them: CMID's study rows and remedies
    (one dataset whole first), CTC's and R52's study rows, R52's CLS-tuning remedies."""
    cls_remedies = [m for m in REMEDIES if m.startswith("cls")]
    return [*(("cmid", m) for m in [*STUDY, *REMEDIES]), *(("ctc", m) for m in STUDY),
            *(("r52", m) for m in [*STUDY, *cls_remedies])]


def paper_value(method: str, dataset: str, metric: str) -> float | None:
    """The paper's figure (%) of a cell, None where its tables have none."""
    if metric in ("acc", "f1"):
        pair = PAPER_ACC_F1.get(method, {}).get(dataset)
        return None if pair is None else pair[metric == "f1"]
    pair = PAPER_HEAD_TAIL.get(method, {}).get(dataset)
    return None if pair is None else pair[metric == "tail_f1"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int]:
    """Kendall's tau-b of two orderings of the same items, and the item pairs ordered the same way
    (``agree``, strictly), the opposite way (``disagree``) and in all (``pairs``)."""
    agree = disagree = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        tied_x += dx == 0
        tied_y += dy == 0
        agree += dx * dy > 0
        disagree += dx * dy < 0
    pairs = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return {"tau": (agree - disagree) / denominator if denominator else float("nan"),
            "agree": int(agree), "disagree": int(disagree), "pairs": pairs}


def difference(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean difference a - b in points and its noise over seeds (None with fewer than two seeds a side)."""
    d = 100 * (np.mean(a) - np.mean(b))
    se = 100 * math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)) if min(len(a), len(b)) > 1 else None
    return {"d": float(d), "se": se}


def verdict(kind: str, d: float, se: float | None) -> str:
    """``holds`` / ``does not hold`` / ``within seed noise`` of a claim (the module docstring's rule)."""
    if se is None:
        return "fewer than 2 seeds"
    if kind == "better":
        return "holds" if d > 2 * se else "does not hold" if d < -2 * se else "within seed noise"
    if kind == "no gain":
        return "does not hold" if d > 2 * se else "holds (worse)" if d < -2 * se else "holds (within seed noise)"
    return "holds (within seed noise)" if abs(d) <= 2 * se else "does not hold"  # "no change"


# (claim, kind, method A, method B): each claim of the study as a comparison of two rows.
CLAIMS = (
    ("Prompt-tuning beats CLS-tuning (T)", "better", "prompt_tuning", "cls_tuning_tanh"),
    ("Prompt-tuning beats CLS-tuning (R)", "better", "prompt_tuning", "cls_tuning_relu"),
    ("w/ pt. LN beats w/ LN", "better", "cls_tuning_pt_ln", "cls_tuning_ln"),
    ("w/ prompt does not help CLS-tuning (R)", "no gain", "cls_tuning_prompt", "cls_tuning_relu"),
    ("w/ ed. changes prompt-tuning little", "no change", "prompt_tuning_ed", "prompt_tuning"),
    ("eta-norm helps CLS-tuning (T)", "better", "cls_tuning_eta_norm", "cls_tuning_tanh"),
    ("focal loss helps CLS-tuning (T)", "better", "cls_tuning_focal", "cls_tuning_tanh"),
    ("focal loss does not help prompt-tuning", "no gain", "prompt_tuning_focal", "prompt_tuning"),
)


def collect(runs_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Aggregated rows of the finished runs, by (dataset, method)."""
    run_dirs = sorted(path.parent for path in runs_dir.glob("*/run.json"))
    return {(row["dataset"], row["method"]): row for row in aggregate_runs(run_dirs)}


def cell(rows: dict, dataset: str, method: str, metric: str) -> str:
    """``ours mean (std) [paper]`` in %, ``-`` for ours when not run; ``n=k`` when fewer than 3 seeds."""
    row = rows.get((dataset, method))
    ours = "-"
    if row is not None:
        ours = f"{100 * row[metric]['mean']:.1f} ({100 * row[metric]['std']:.1f})"
        ours += f" n={row['n']}" if row["n"] < len(SEEDS) else ""
    paper = paper_value(method, dataset, metric)
    return ours if paper is None else f"{ours} [{paper:.1f}]"


def table(rows: dict, methods: dict[str, str], metrics: Sequence[str], names: dict[str, str]) -> str:
    """Markdown table in the paper's layout: one row a method, columns dataset x metric."""
    header = ["method", *(f"{d.upper()} {names[m]}" for d in DATASETS for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, label in methods.items():
        lines.append("| " + " | ".join([label, *(cell(rows, d, method, m) for d in DATASETS for m in metrics)]) + " |")
    return "\n".join(lines) + "\n"


def rank_agreement(rows: dict) -> list[dict[str, Any]]:
    """Per dataset and metric (macro F1, tail F1): tau-b of our means against the paper's, over the
    methods that have both."""
    out = []
    for dataset, metric in itertools.product(DATASETS, ("f1", "tail_f1")):
        methods = [m for m in STUDY if (dataset, m) in rows and paper_value(m, dataset, metric) is not None]
        ours = [rows[(dataset, m)][metric]["mean"] for m in methods]
        paper = [paper_value(m, dataset, metric) for m in methods]
        out.append({"dataset": dataset, "metric": metric, "methods": methods, **kendall_tau(ours, paper)})
    return out


def judge_claims(rows: dict) -> list[dict[str, Any]]:
    """Each claim per dataset and metric (macro F1, tail F1): our difference, its noise, the verdict,
    and the paper's difference where it has both figures."""
    out = []
    for (claim, kind, a, b), dataset, metric in itertools.product(CLAIMS, DATASETS, ("f1", "tail_f1")):
        if (dataset, a) not in rows or (dataset, b) not in rows:
            continue
        diff = difference(rows[(dataset, a)][metric]["values"], rows[(dataset, b)][metric]["values"])
        pa, pb = paper_value(a, dataset, metric), paper_value(b, dataset, metric)
        out.append({"claim": claim, "dataset": dataset, "metric": metric, **diff,
                    "verdict": verdict(kind, diff["d"], diff["se"]),
                    "paper_d": None if pa is None or pb is None else round(pa - pb, 1)})
    return out


def gap_recovered(rows: dict) -> list[dict[str, Any]]:
    """The study's "w/ pt. LN recovers most of the gap": the share of the CLS-tuning (R) to prompt-tuning
    gap closed by w/ LN and by w/ pt. LN, ours and the paper's (macro F1; tail F1 ours only)."""
    out = []
    for dataset, metric in itertools.product(DATASETS, ("f1", "tail_f1")):
        means = {m: 100 * rows[(dataset, m)][metric]["mean"] for m in ANALYSIS if (dataset, m) in rows}
        entry: dict[str, Any] = {"dataset": dataset, "metric": metric}
        for name, source in (("ours", means), ("paper", {m: paper_value(m, dataset, metric) for m in ANALYSIS})):
            base, top = source.get("cls_tuning_relu"), source.get("prompt_tuning")
            for variant in ("cls_tuning_ln", "cls_tuning_pt_ln"):
                value = source.get(variant)
                known = None not in (base, top, value) and top != base
                entry[f"{name}_{variant}"] = (value - base) / (top - base) if known else None
        entry["verdict"] = most_of_gap(rows, dataset, metric, entry["ours_cls_tuning_pt_ln"])
        out.append(entry)
    return out


def most_of_gap(rows: dict, dataset: str, metric: str, share: float | None) -> str:
    """"w/ pt. LN recovers most of the gap": holds when it closes more than half of it and its gain
    over CLS-tuning (R) is beyond seed noise; does not hold when it closes half or less and
    prompt-tuning's lead over it is beyond seed noise; else within seed noise."""
    if share is None:
        return "-"
    values = {m: rows[(dataset, m)][metric]["values"] for m in ("cls_tuning_relu", "cls_tuning_pt_ln", "prompt_tuning")}
    gain, lead = difference(values["cls_tuning_pt_ln"], values["cls_tuning_relu"]), \
        difference(values["prompt_tuning"], values["cls_tuning_pt_ln"])
    if gain["se"] is None or lead["se"] is None:
        return "fewer than 2 seeds"
    if share > 0.5 and gain["d"] > 2 * gain["se"]:
        return "holds"
    if share <= 0.5 and lead["d"] > 2 * lead["se"]:
        return "does not hold"
    return "within seed noise"


def remedy_rows(rows: dict) -> list[dict[str, Any]]:
    """Each remedy's tail and macro F1 against the method it modifies and (CLS-tuning's) against prompt-tuning."""
    out = []
    for (method, (base, label)), dataset in itertools.product(REMEDIES.items(), DATASETS):
        if (dataset, method) not in rows:
            continue
        entry = {"method": method, "label": label, "dataset": dataset}
        for metric in ("f1", "tail_f1"):
            values = rows[(dataset, method)][metric]["values"]
            for ref_name, ref in (("base", REMEDY_BASE[base]), ("prompt", "prompt_tuning")):
                if (dataset, ref) in rows and not (ref_name == "prompt" and ref == REMEDY_BASE[base]):
                    diff = difference(values, rows[(dataset, ref)][metric]["values"])
                    entry[f"{metric}_vs_{ref_name}"] = {**diff, "verdict": verdict("better", diff["d"], diff["se"])}
        out.append(entry)
    return out


def figure(rows: dict) -> Figure:
    """Tail F1 (%) of every method that has runs, one panel per dataset, each seed a dot, the
    mean a short bar, prompt-tuning's mean a dashed line."""
    # The CLS-tuning family (study rows, then remedies), then the prompt-tuning family.
    order = sorted(LABELS, key=lambda m: (m.startswith("prompt"), m in REMEDIES, m != "cls_tuning_tanh"))
    methods = [m for m in order if any((d, m) in rows for d in DATASETS)]
    datasets = [d for d in DATASETS if any((d, m) in rows for m in methods)]
    fig = Figure(figsize=(max(8.0, 0.4 * len(methods) * len(datasets)), 5.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets)))
    for ax, dataset in zip(axes, datasets):
        for x, method in enumerate(methods):
            row = rows.get((dataset, method))
            if row is None:
                continue
            values = 100 * np.array(row["tail_f1"]["values"])
            color = "tab:orange" if method.startswith("prompt") else "tab:blue"
            marker = "s" if method in REMEDIES else "o"
            ax.scatter(x + np.linspace(-0.12, 0.12, len(values)), values, s=18, color=color, marker=marker, zorder=3)
            ax.hlines(values.mean(), x - 0.3, x + 0.3, color=color, linewidth=1.5, zorder=2)
        if (dataset, "prompt_tuning") in rows:
            ax.axhline(100 * rows[(dataset, "prompt_tuning")]["tail_f1"]["mean"], color="tab:orange",
                       linestyle="--", linewidth=1, label="Prompt-tuning mean")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=70, ha="right", fontsize=7)
        ax.set_title(dataset.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test tail F1 (%)")
    fig.suptitle("Tail F1 per method on the own backbone (dots: seeds; circles: study rows, squares: remedies)",
                 fontsize=10)
    return fig


METRIC_NAMES = {"f1": "macro F1", "tail_f1": "tail F1"}  # the metrics that claims, orderings and gaps compare
COMPARED = {"holds": "better", "does not hold": "worse"}  # a remedy's "better" verdict, in words of a comparison


def signed(d: float | None, se: float | None = None) -> str:
    """``+1.2`` or ``+1.2 (0.4)`` with the noise, ``-`` when there is no figure."""
    if d is None:
        return "-"
    return f"{d:+.1f}".replace("-0.0", "+0.0") + ("" if se is None else f" ({se:.1f})")  # no "-0.0"


def seed_range(seeds: Sequence[int]) -> str:
    """``775-777`` for consecutive seeds, else ``775, 778``."""
    seeds = sorted(seeds)
    consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if consecutive and len(seeds) > 1 else ", ".join(map(str, seeds))


def seeds_text(rows: dict) -> str:
    """The seeds the means are over: the most common set, then each other set with its cells,
    e.g. ``seeds 775-777 (775-779: the 10 study rows on CMID and CTC)``."""
    cells: dict[tuple[int, ...], list[tuple[str, str]]] = {}
    for key, row in rows.items():
        cells.setdefault(tuple(sorted(row["seeds"])), []).append(key)
    common, *others = sorted(cells, key=lambda seeds: -len(cells[seeds]))
    notes = []
    for seeds in others:
        datasets = sorted({d for d, _ in cells[seeds]})
        methods = {m for _, m in cells[seeds]}
        if methods == set(STUDY) and len(cells[seeds]) == len(STUDY) * len(datasets):
            what = f"the {len(STUDY)} study rows on {' and '.join(d.upper() for d in datasets)}"
        else:
            what = ", ".join(f"{d}-{m}" for d, m in sorted(cells[seeds]))
        notes.append(f"{seed_range(seeds)}: {what}")
    return f"seeds {seed_range(common)}" + (f" ({'; '.join(notes)})" if notes else "")


def report(rows: dict) -> tuple[str, dict[str, Any]]:
    """The Markdown report and its numbers."""
    taus, claims, gaps, remedies = rank_agreement(rows), judge_claims(rows), gap_recovered(rows), remedy_rows(rows)
    missing = [f"{d}-{m}" for d, m in planned_cells() if (d, m) not in rows or rows[(d, m)]["n"] < len(SEEDS)]
    acc_f1, head_tail = {"acc": "Acc", "f1": "F1"}, {"head_f1": "head", "tail_f1": "tail"}
    text = [f"Ours: test %, mean (population std) over {seeds_text(rows)}, own backbone, "
            "`examples/own_backbone.yaml` budget; [paper]: BERT-base, 5 seeds (PAPER.md). "
            "The study's definitions on both sides.\n"]
    if missing:
        text.append(f"Cells not run or short of {len(SEEDS)} seeds ({len(missing)}): {', '.join(missing)}.\n")
    text += ["## Main table\n", table(rows, MAIN, list(acc_f1), acc_f1),
             "\n## Analysis table\n", table(rows, ANALYSIS, list(acc_f1), acc_f1),
             "\n## Head / tail table (test F1)\n", table(rows, LABELS, list(head_tail), head_tail),
             "\n## Ordering of the study's methods against the paper's (Kendall's tau-b)\n",
             "| dataset | by | methods | tau-b | pairs in agreement |\n|---|---|---|---|---|\n"]
    text += [f"| {t['dataset']} | {METRIC_NAMES[t['metric']]} | {len(t['methods'])} | "
             f"{t['tau']:.2f} | {t['agree']} of {t['pairs']} |\n" for t in taus]
    text += ["\n## The study's claims\n", "d: mean difference in points (ours), se: its noise over seeds; "
             "rule in `benchmarks/study/report.py`.\n\n",
             "| claim | dataset | metric | d (se) | verdict | paper d |\n|---|---|---|---|---|---|\n"]
    text += [f"| {c['claim']} | {c['dataset']} | {METRIC_NAMES[c['metric']]} | "
             f"{signed(c['d'], c['se'])} | {c['verdict']} | {signed(c['paper_d'])} |\n" for c in claims]
    text += ["\n## Share of the CLS-tuning (R) to prompt-tuning gap closed\n",
             "\"w/ pt. LN recovers most of the gap\": more than half, its gain beyond seed noise.\n\n",
             "| dataset | metric | w/ LN ours | w/ pt. LN ours | w/ LN paper | w/ pt. LN paper | most of the gap (ours) |\n"
             "|---|---|---|---|---|---|---|\n"]
    share = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    text += [f"| {g['dataset']} | {METRIC_NAMES[g['metric']]} | {share(g['ours_cls_tuning_ln'])} | "
             f"{share(g['ours_cls_tuning_pt_ln'])} | {share(g['paper_cls_tuning_ln'])} | "
             f"{share(g['paper_cls_tuning_pt_ln'])} | {g['verdict']} |\n" for g in gaps]
    text += ["\n## Remedies beyond the study\n", "Difference in points (se) against the method the remedy "
             "modifies (CLS-tuning (T) or prompt-tuning) and against prompt-tuning.\n\n",
             "| remedy | dataset | tail F1 vs base | tail F1 vs prompt | macro F1 vs base | macro F1 vs prompt |\n"
             "|---|---|---|---|---|---|\n"]

    def versus(entry: dict, key: str) -> str:
        if key not in entry:
            return "-"
        v = entry[key]
        return f"{signed(v['d'], v['se'])} {COMPARED.get(v['verdict'], v['verdict'])}"

    text += [f"| {r['label']} | {r['dataset']} | {versus(r, 'tail_f1_vs_base')} | {versus(r, 'tail_f1_vs_prompt')} | "
             f"{versus(r, 'f1_vs_base')} | {versus(r, 'f1_vs_prompt')} |\n" for r in remedies]
    numbers = {"rows": [rows[key] for key in sorted(rows)], "rank_agreement": taus, "claims": claims,
               "gap_recovered": gaps, "remedies": remedies, "missing": missing}
    return "".join(text), numbers


# --- many / medium / few-shot classes (issue 34) ---------------------------------------------

SHOT_METHODS = {"cls_tuning_tanh": "CLS-tuning (T)", "cls_tuning_relu": "CLS-tuning (R)",
                "cls_tuning_pt_ln": "w/ pt. LN", "prompt_tuning": "Prompt-tuning"}


def shot_f1(runs_dir: Path, data_dir: Path) -> tuple[str, dict[str, Any]]:
    """Many/medium/few-shot F1 of every finished run from its ``per_class_f1`` and its dataset's
    training counts (``data_dir/<dataset>/train.tsv``): more than 100, 20 to 100, fewer than 20
    examples. Every class of the three datasets has test examples, so a bucket's F1 is the plain
    mean over its classes, as lt-tuning's ``many_f1``... compute it. Returns the Markdown section,
    with where prompt-tuning's advantage over CLS-tuning (T) lies, and its numbers."""
    from lt_tuning.data import CMIDDataModule, CTCDataModule, R52DataModule
    from lt_tuning.metrics import SHOTS, shot_buckets

    modules = {"cmid": CMIDDataModule, "ctc": CTCDataModule, "r52": R52DataModule}
    buckets = {name: shot_buckets(module(data_dir=str(data_dir)).class_counts("train"))
               for name, module in modules.items()}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for path in sorted(runs_dir.glob("*/run.json")):
        run = load_run(path.parent)
        if "per_class_f1" not in run or run["dataset"] not in buckets:
            continue
        cell = values.setdefault((run["dataset"], run["method"]), {shot: [] for shot in SHOTS})
        for shot, classes in buckets[run["dataset"]].items():
            cell[shot].append(float(np.mean([run["per_class_f1"][c] for c in classes])))
    text = ["\n## Many / medium / few-shot F1\n",
            "Test F1 averaged over the classes with more than 100 (many), 20 to 100 (medium) and fewer than 20 "
            "(few) training examples, from each run's per-class F1 (no rerun); mean (population std) over seeds. "
            "Classes per bucket: " + "; ".join(f"{d} {'/'.join(str(len(b[s])) for s in SHOTS)}"
                                              for d, b in buckets.items()) + ".\n\n",
            "| method | " + " | ".join(f"{d} {s}" for d in DATASETS for s in SHOTS) + " |\n",
            "|---|" + "---|" * len(DATASETS) * len(SHOTS) + "\n"]
    for method, label in SHOT_METHODS.items():
        cells = [f"{100 * np.mean(v):.1f} ({100 * np.std(v):.1f})" if (v := values.get((d, method), {}).get(s))
                 else "-" for d in DATASETS for s in SHOTS]
        text.append(f"| {label} | " + " | ".join(cells) + " |\n")
    text += ["\nPrompt-tuning minus CLS-tuning (T), points (se), verdict by the rule above:\n\n",
             "| dataset | " + " | ".join(SHOTS) + " |\n", "|---|" + "---|" * len(SHOTS) + "\n"]
    advantage = []
    for dataset in DATASETS:
        prompt, cls = values.get((dataset, "prompt_tuning")), values.get((dataset, "cls_tuning_tanh"))
        if not prompt or not cls:
            continue
        row = {"dataset": dataset}
        for shot in SHOTS:
            diff = difference(prompt[shot], cls[shot])
            row[shot] = {**diff, "verdict": verdict("better", diff["d"], diff["se"])}
        advantage.append(row)
        text.append(f"| {dataset} | " + " | ".join(f"{signed(row[s]['d'], row[s]['se'])} {row[s]['verdict']}"
                                                  for s in SHOTS) + " |\n")
    if advantage:
        largest = [f"{row['dataset']} {max(SHOTS, key=lambda shot: row[shot]['d'])}" for row in advantage]
        text.append(f"\nLargest advantage per dataset: {', '.join(largest)}.\n")
    numbers = {"buckets": {d: {s: len(c) for s, c in b.items()} for d, b in buckets.items()},
               "runs": [{"dataset": d, "method": m, **v} for (d, m), v in sorted(values.items())],
               "prompt_vs_cls_tuning_tanh": advantage}
    return "".join(text), numbers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/study/runs"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/study"))
    parser.add_argument("--figure", type=Path, help="PNG of the tail F1 per method (e.g. docs/images/study_tail_f1.png)")
    parser.add_argument("--data_dir", type=Path, default=os.environ.get("LT_TUNING_DATA"),
                        help="the datasets' folder, for the many/medium/few-shot section (default $LT_TUNING_DATA)")
    args = parser.parse_args(argv)
    rows = collect(args.runs)
    text, numbers = report(rows)
    if args.data_dir:
        shots, numbers["shots"] = shot_f1(args.runs, args.data_dir)
        text += shots
    atomic_write_json(args.output / "report.json", numbers)
    atomic_write_text(args.output / "report.md", "# The whole study on the own backbone\n\n" + text)
    print(text)
    if args.figure:
        print("wrote", save_figure(figure(rows), args.figure))


if __name__ == "__main__":
    main()
