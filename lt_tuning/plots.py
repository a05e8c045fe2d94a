"""Head-to-tail figures of a long-tailed run: class distribution, per-class F1, weight norms, confusions.

Every figure orders classes by training count, most frequent first (the order of
:func:`~lt_tuning.metrics.head_tail_split`), and marks the head/tail boundary of the study's
rule with a dashed vertical line. The functions take plain data and return a
:class:`matplotlib.figure.Figure` built without pyplot, so they touch no global state: in a
notebook the figure displays itself; elsewhere :func:`save_figure` writes it as a PNG.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from matplotlib import font_manager, ft2font
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lt_tuning.metrics import head_tail_split

if TYPE_CHECKING:  # figures of finished runs (``lt-tuning report``) need no torch
    import torch

Values = Union[Sequence[float], np.ndarray, "torch.Tensor"]
Runs = Union[Mapping[str, Values], Values]

HEAD_COLOR, TAIL_COLOR, BOUNDARY_COLOR = "tab:blue", "tab:orange", "dimgray"
# Tried after the default font when label names have glyphs it lacks (CMID, IFLYTEK, CTC, MSRA).
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
    "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS",
)


def head_to_tail(counts: Sequence[int] | np.ndarray | torch.Tensor, ratio: float) -> tuple[list[int], int]:
    """Class indices from most to least frequent, and how many of the first are head classes."""
    head, tail = head_tail_split(counts, ratio)
    return head + tail, len(head)


def class_distribution_figure(
    counts: Sequence[int] | np.ndarray | torch.Tensor, ratio: float, label_names: Sequence[str] | None = None
) -> Figure:
    """Bar chart of the examples per class, head to tail, head bars and tail bars in two colours.

    Args:
        counts: training examples of each class, indexed by class.
        ratio: the head/tail ratio of :func:`~lt_tuning.metrics.head_tail_split`.
        label_names: class names in index order (tick labels); None: class indices.
    """
    counts = np.asarray(counts, dtype=np.int64)
    order, n_head = head_to_tail(counts, ratio)
    figure, ax = _figure(len(order))
    sorted_counts = counts[order]
    total = int(counts.sum())
    for name, part, color in (("head", slice(0, n_head), HEAD_COLOR), ("tail", slice(n_head, None), TAIL_COLOR)):
        positions, heights = np.arange(len(order))[part], sorted_counts[part]
        if positions.size:
            ax.bar(positions, heights, color=color,
                   label=f"{name}: {positions.size} class{'es' * (positions.size != 1)}, "
                         f"{heights.sum() / total:.0%} of examples")
    ax.set_ylabel("examples")
    ax.set_title(f"Class distribution, head to tail (head/tail ratio {ratio:g})")
    _finish(ax, order, n_head, label_names)
    return figure


def per_class_f1_figure(
    per_class_f1: Runs, counts: Sequence[int] | np.ndarray | torch.Tensor, ratio: float, label_names: Sequence[str] | None = None
) -> Figure:
    """Per-class F1 head to tail: one bar series per run (``{"CLS-tuning": f1s, ...}``), grouped by class.

    Args:
        per_class_f1: one run's per-class F1 (indexed by class), or run name -> that.
        counts: as in :func:`class_distribution_figure`; the training counts fix the class
            order, so the runs line up class by class.
        ratio: as in :func:`class_distribution_figure`.
        label_names: as in :func:`class_distribution_figure`.
    """
    return _per_class_figure(per_class_f1, counts, ratio, label_names, "F1", "Per-class F1")


def weight_norms_figure(
    norms: Runs, counts: Sequence[int] | np.ndarray | torch.Tensor, ratio: float, label_names: Sequence[str] | None = None
) -> Figure:
    """Per-class classifier weight norms head to tail, one series per run (``{"CLS-tuning":
    module.class_weight_norms(), ...}``, see :meth:`~lt_tuning.models.LongTailedClassifier.class_weight_norms`).

    A classifier whose norms fall from head to tail favours head classes; the study shows
    CLS-tuning's do and prompt-tuning's do much less.
    """
    return _per_class_figure(norms, counts, ratio, label_names, "weight L2 norm", "Per-class weight norm")


def confusion_matrix_figure(
    confusion: Sequence[Sequence[int]] | np.ndarray, counts: Sequence[int] | np.ndarray, ratio: float,
    label_names: Sequence[str] | None = None, title: str = "Confusion matrix",
) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), classes head to tail on both
    axes, each row as shares of its class's examples (a row of a class without examples stays
    blank). Lines mark the head/tail boundary: the block right of it in the tail rows holds the
    tail classes' errors that went to other tail classes; left of it, those that went to the head.

    Args:
        confusion: ``[C, C]`` counts, indexed by class (``test_metrics.json``'s ``confusion_matrix``).
        counts: as in :func:`class_distribution_figure`.
        ratio: as in :func:`class_distribution_figure`.
        label_names: as in :func:`class_distribution_figure`.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    order, n_head = head_to_tail(counts, ratio)
    if matrix.shape != (len(order), len(order)):
        raise ValueError(f"A confusion matrix of shape {matrix.shape} for {len(order)} classes.")
    matrix = matrix[np.ix_(order, order)]
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    size = min(max(5.0, 0.16 * len(order) + 3.0), 24.0)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's examples")
    for line in (ax.axvline, ax.axhline):
        line(n_head - 0.5, color="tab:red", linestyle="--", linewidth=1.0)
    names = [label_names[c] for c in order] if label_names is not None else [str(c) for c in order]
    families = _fonts_for(names) if label_names is not None else None
    ticks = names if families or label_names is None else [str(c) for c in order]
    fontsize = 7 if len(order) <= 40 else 5 if len(order) <= 80 else 3
    ax.set_xticks(range(len(order)), ticks, rotation=90, fontsize=fontsize, fontfamily=families)
    ax.set_yticks(range(len(order)), ticks, fontsize=fontsize, fontfamily=families)
    ax.set_xlabel("predicted class (head to tail)")
    ax.set_ylabel("true class (head to tail)")
    ax.set_title(f"{title}, head | tail boundary dashed (ratio {ratio:g})")
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``figure`` as a PNG to ``path`` atomically (a reader never sees a half-written file)."""
    from lt_tuning.io import atomic_open  # with torch: only for the run's own writers
    with atomic_open(path) as out:
        figure.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


# --- drawing ------------------------------------------------------------------------------


def _per_class_figure(
    runs: Runs, counts: Sequence[int] | np.ndarray | torch.Tensor, ratio: float, label_names: Sequence[str] | None,
    ylabel: str, title: str,
) -> Figure:
    """Grouped bars of per-class values, one series per run, classes head to tail."""
    if not isinstance(runs, Mapping):
        runs = {"": runs}
    if not runs:
        raise ValueError("No run to plot.")
    order, n_head = head_to_tail(counts, ratio)
    figure, ax = _figure(len(order))
    width = 0.8 / len(runs)
    for i, (name, values) in enumerate(runs.items()):
        if hasattr(values, "detach"):  # a torch tensor
            values = values.detach().float().cpu()
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(order),):
            raise ValueError(f"Run {name!r} has values of shape {values.shape} for {len(order)} classes.")
        offset = (i - (len(runs) - 1) / 2) * width
        ax.bar(np.arange(len(order)) + offset, values[order], width=width, color=f"C{i}", label=name or None)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}, classes head to tail (head/tail ratio {ratio:g})")
    _finish(ax, order, n_head, label_names)
    return figure


def _figure(num_classes: int) -> tuple[Figure, Axes]:
    """A figure wide enough for one labelled tick per class."""
    figure = Figure(figsize=(min(max(6.0, 0.22 * num_classes + 2.0), 28.0), 4.5), layout="constrained")
    return figure, figure.add_subplot()


def _finish(ax: Axes, order: list[int], n_head: int, label_names: Sequence[str] | None) -> None:
    """Class tick labels, the head/tail boundary line and the legend."""
    if label_names is not None and len(label_names) != len(order):
        raise ValueError(f"{len(label_names)} label names for {len(order)} classes.")
    ax.axvline(n_head - 0.5, color=BOUNDARY_COLOR, linestyle="--", linewidth=1.2, label="head | tail boundary")
    ax.set_xlim(-0.6, len(order) - 0.4)
    names = [label_names[c] for c in order] if label_names is not None else None
    families = _fonts_for(names) if names is not None else None
    ax.set_xticks(range(len(order)), names if families else [str(c) for c in order], rotation=90,
                  fontsize=7 if len(order) <= 60 else 5, fontfamily=families)
    ax.set_xlabel("class" if families else "class index" if names is None
                  else "class index (no installed font has the glyphs of the label names)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()  # below the plot: inside, it would hide bars
    per_row = max(1, int(ax.figure.get_figwidth() // 3))  # an entry takes up to 3 inches
    ax.figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), per_row), fontsize=8,
                     frameon=False)


def _fonts_for(texts: Sequence[str]) -> list[str] | None:
    """Font families that together have a glyph for every character of ``texts``, or None."""
    needed = {ord(char) for text in texts for char in text if not char.isspace()}
    families: list[str] = []
    covered: set[int] = set()
    for family in ("sans-serif", *CJK_FAMILIES):
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False)
        except ValueError:
            continue
        families.append(family)
        covered |= _charmap(path)
        if needed <= covered:
            return families
    return None


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    return frozenset(ft2font.FT2Font(path).get_charmap())
