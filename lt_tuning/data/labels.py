"""The label space: label names in index order, and the label words a verbalizer is built from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from lt_tuning.data.reading import DataFileError, label_index, load_json_mapping


def load_label_names(labels: Sequence[str | int] | str | Path | None) -> list[str]:
    """Label names in index order, from a list of names or a ``label2idx.json`` path."""
    if labels is None:
        raise ValueError("No label list: pass `labels` (a list of names or a label2idx.json path).")
    if isinstance(labels, (str, Path)):
        mapping = load_json_mapping(labels)
        indices, expected = list(mapping.values()), range(len(mapping))
        if Counter(indices) != Counter(expected):
            problems = {"missing": [i for i in expected if i not in indices],
                        "given twice": [i for i, count in Counter(indices).items() if count > 1],
                        "out of range": [i for i in indices if i not in expected]}
            found = ", ".join(f"{what}: {values}" for what, values in problems.items() if values)
            raise DataFileError(f"{labels}: label indices must be 0..{len(mapping) - 1}, each once ({found}); "
                                "renumber the labels.")
        return sorted(mapping, key=mapping.__getitem__)
    names = [str(label) for label in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"`labels` has duplicates: {list(labels)}.")
    return names


def load_label_words(source: Mapping[str | int, str] | str | Path | None, label_names: Sequence[str]
                     ) -> dict[str, str] | None:
    """Label name -> verbalizer word, from a mapping or a JSON path whose keys are label names or
    indices 0..K-1 (as ``label_names`` orders them); None when there is none."""
    if source is None:
        return None
    words = load_json_mapping(source) if isinstance(source, (str, Path)) else source
    label2idx = {name: index for index, name in enumerate(label_names)}
    resolved = {}
    for key, word in words.items():
        index = label_index(key, label2idx)
        resolved[str(key) if index is None else label_names[index]] = word
    return resolved
