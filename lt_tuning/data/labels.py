"""The label space: label names in index order, and the label words a verbalizer is built from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lt_tuning.data.reading import DataFileError, load_json_mapping


def load_label_names(labels: Sequence[str] | str | Path | None) -> list[str]:
    """Label names in index order, from a list of names or a ``label2idx.json`` path."""
    if labels is None:
        raise ValueError("No label list: pass `labels` (a list of names or a label2idx.json path).")
    if isinstance(labels, (str, Path)):
        mapping = load_json_mapping(labels)
        if sorted(mapping.values()) != list(range(len(mapping))):
            raise DataFileError(f"{labels}: label indices must be 0..{len(mapping) - 1} with no gaps.")
        return sorted(mapping, key=mapping.__getitem__)
    if len(set(labels)) != len(labels):
        raise ValueError(f"`labels` has duplicates: {list(labels)}.")
    return [str(label) for label in labels]


def load_label_words(source: Mapping[str, str] | str | Path | None) -> dict[str, str] | None:
    """Label -> verbalizer word, from a mapping or a JSON path; None when there is none."""
    if source is None:
        return None
    return dict(load_json_mapping(source)) if isinstance(source, (str, Path)) else dict(source)
