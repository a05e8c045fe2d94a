"""Aggregate finished runs into the study's table: mean (std) of Acc / F1 / head F1 / tail F1 per cell.

A run directory holds ``run.json`` (its cell: any keys, e.g. ``dataset``, ``method``, ``seed``)
and, anywhere below it, the ``test_metrics.json`` that the CLI writes after testing (``TestMetricsWriter``),
unless ``run.json`` holds the metrics already (``benchmarks/study/reproduce.py`` merges them into it).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


METRICS = ("acc", "f1", "head_f1", "tail_f1")
HEADERS = {"acc": "Acc", "f1": "F1", "head_f1": "Head F1", "tail_f1": "Tail F1"}


def read_test_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The newest ``test_metrics.json`` below ``run_dir``, ``test/`` prefix dropped."""
    found = sorted(Path(run_dir).rglob("test_metrics.json"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no test_metrics.json below it; did the run finish its test?")
    metrics = json.loads(found[-1].read_text(encoding="utf-8"))
    return {key.removeprefix("test/"): value for key, value in metrics.items()}


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of ``run_dir``, merged with :func:`read_test_metrics` unless it holds the metrics already."""
    info = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    return info if "f1" in info else {**info, **read_test_metrics(run_dir)}


def aggregate_runs(
    run_dirs: Iterable[str | os.PathLike], cell_keys: Sequence[str] = ("dataset", "method")
) -> list[dict[str, Any]]:
    """One row per cell (runs sharing ``cell_keys``), in first-seen order: n, and per metric
    its mean and std over the runs (population std, ``ddof=0``), as fractions."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        cells.setdefault(tuple(run[key] for key in cell_keys), []).append(run)
    rows = []
    for cell, runs in cells.items():
        row: dict[str, Any] = dict(zip(cell_keys, cell))
        row["n"] = len(runs)
        row["seeds"] = [run.get("seed") for run in runs]
        for metric in METRICS:
            values = np.array([run[metric] for run in runs], dtype=float)
            row[metric] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]], cell_keys: Sequence[str] = ("dataset", "method")) -> str:
    """Markdown table of :func:`aggregate_runs` rows, in percent: ``mean (std)``."""
    header = [*cell_keys, "n", *(HEADERS[metric] for metric in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[key]) for key in cell_keys] + [str(row["n"])]
        cells += [f"{100 * row[m]['mean']:.2f} ({100 * row[m]['std']:.2f})" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | os.PathLike,
                cell_keys: Sequence[str] = ("dataset", "method"), preamble: str = "") -> tuple[Path, Path]:
    """Write ``<stem>.json`` (the rows) and ``<stem>.md`` (``preamble`` + the table)."""
    from lt_tuning.io import atomic_write_json, atomic_write_text  # imports torch: reading runs needs none

    stem = Path(stem)
    json_path = atomic_write_json(stem.with_suffix(".json"), list(rows))
    md_path = atomic_write_text(stem.with_suffix(".md"), preamble + format_table(rows, cell_keys))
    return json_path, md_path


def cpu() -> dict[str, Any]:
    """The CPU's model name and its bf16 instructions (float kernels differ between CPUs)."""
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"cpu": name, "cpu_bf16_instructions": sorted(flags & {"amx_bf16", "avx512_bf16"})}
