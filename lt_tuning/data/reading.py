"""Read labelled text files (TSV, CSV, JSON lines) into validated columns, texts to classify
(those or ``.txt``), and write tables back in the same conventions.

Every problem is reported with the file, the row and what to do, before any training
starts: a wrong number of fields, a stray quote, an empty text, an unknown label, an empty
file, bytes that are not UTF-8. A UTF-8 byte order mark (as spreadsheet tools write) is skipped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lt_tuning.io import atomic_write_text

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class DataFileError(ValueError):
    """A data file that cannot be used as it is; the message says where and how to fix it."""


def read_labelled_file(
    path: str | Path,
    text_fields: Sequence[str],
    label_field: str | None,
    label2idx: Mapping[str, int] | None,
) -> dict[str, list]:
    """Read ``path`` into ``{"text_a": [...], ("text_b": [...],) ("label": [...])}``.

    TSV is read with quoting off (the released data has bare ``"`` in texts) and a header row
    naming the columns; CSV uses standard quoting and a header; JSON lines hold one object per
    line. ``label_field=None`` reads unlabelled data (prediction).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(f"{path}: unknown file type {path.suffix!r}; use .tsv, .csv or .jsonl.")
    wanted = list(text_fields) + ([label_field] if label_field is not None else [])
    rows = _rows(io.StringIO(read_text(path), newline=""), fmt, path, wanted)
    return columns_from_rows(rows, str(path), text_fields, label_field, label2idx)


def columns_from_rows(
    rows: Iterable[tuple[int, Mapping]],
    source: str,
    text_fields: Sequence[str],
    label_field: str | None,
    label2idx: Mapping[str, int] | None,
) -> dict[str, list]:
    """Validate ``(row number, record)`` pairs into columns; errors name ``source`` and the row."""
    wanted = list(text_fields) + ([label_field] if label_field is not None else [])
    columns: dict[str, list] = {name: [] for name in ("text_a", "text_b")[: len(text_fields)]}
    labels: list[int] = []
    for line, row in rows:
        absent = [name for name in wanted if name not in row]
        if absent:
            raise DataFileError(f"{source}, row {line}: no column(s) {absent} (the row has {sorted(row)}); add them "
                                "or name the right ones in text_fields / label_field.")
        null = [name for name in wanted if row[name] is None]
        if null:
            raise DataFileError(f"{source}, row {line}: the value of column(s) {null} is null (empty); "
                                "fill it in or delete the row.")
        for key, field in zip(columns, text_fields):
            text = str(row[field])
            if not text.strip():
                raise DataFileError(
                    f"{source}, row {line}: empty text in column {field!r}; fill it in or delete the row."
                )
            columns[key].append(text)
        if label_field is not None:
            labels.append(_label_index(row[label_field], label2idx, source, line))
    if not columns["text_a"]:
        raise DataFileError(f"{source}: no examples (the split is empty); add rows or point to the right data.")
    if label_field is not None:
        columns["label"] = labels
    return columns


def label_index(label: object, label2idx: Mapping[str, int]) -> int | None:
    """The index of ``label``: a label name, else an index 0..K-1 (an int, or digits that name no
    label); None when it is neither."""
    name = str(label)
    if name in label2idx:
        return label2idx[name]
    return int(name) if name.isascii() and name.isdigit() and int(name) < len(label2idx) else None


def _label_index(label: object, label2idx: Mapping[str, int] | None, source: str, line: int) -> int:
    if label2idx is None:
        raise DataFileError(f"{source}: no label list given; set `labels` (a list or a label2idx.json path).")
    index = label_index(label, label2idx)
    if index is None:
        known = ", ".join(list(label2idx)[:20]) + (", ..." if len(label2idx) > 20 else "")
        raise DataFileError(
            f"{source}, row {line}: unknown label {label!r}. Labels are names ({known}) or indices "
            f"0..{len(label2idx) - 1}. Fix the row or add the label to the label list (label2idx.json / `labels`)."
        )
    return index


def _rows(handle, fmt: str, path: Path, wanted: Sequence[str]):
    """Yield ``(line_number, {column: value})``; line numbers count the header as line 1, which
    must name the ``wanted`` columns."""
    if fmt == "jsonl":
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, _json_object(text, path, number)
        return
    if fmt == "tsv":
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(handle, strict=True)  # strict: a misplaced quote is an error, not a merged row
    header = next(reader, None)
    if header is None:
        return
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataFileError(
            f"{path}, line 1 (the header): no column {', '.join(map(repr, missing))}; the header has {header}. "
            "Fix the header, or name its columns in text_fields / label_field."
        )
    while True:
        start = reader.line_num + 1  # a quoted field may run on over several lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise _quote_error(path, start, reader.line_num, str(err)) from None
        if not row:
            continue
        if len(row) != len(header):
            if reader.line_num > start:
                raise _quote_error(path, start, reader.line_num, f"{len(row)} field(s), the header has {len(header)}")
            raise DataFileError(
                f"{path}, line {start}: {len(row)} field(s) where the header {header} has {len(header)}. "
                "Check for a stray or missing separator in that row."
            )
        yield start, dict(zip(header, row))


def _quote_error(path: Path, start: int, end: int, detail: str) -> DataFileError:
    """A quote on line ``start`` that opened a field the reader could not close where it should."""
    runs_on = f", the row runs on to line {end}" if end > start else ""
    return DataFileError(
        f'{path}, line {start}: a stray quote (") in this row ({detail}{runs_on}). Remove the quote, or quote '
        'the whole field and double each quote inside it ("").'
    )


def read_text(path: str | Path) -> str:
    """``path`` decoded as UTF-8 (a byte order mark skipped); the error names the line of the first bad byte."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFileError(
            f"{path}, line {line}: not UTF-8 (byte {err.start} of the file: {err.reason}); re-save the file as UTF-8."
        ) from None


def load_json_mapping(path: str | Path) -> dict:
    """Load a JSON object (label2idx.json, verbalizer.json) with a clear error if absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    return _json_object(read_text(path), path, 1)


def _json_object(text: str, path: Path, line: int) -> dict:
    """Parse ``text`` (starting at ``line`` of ``path``) as one JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        detail = f"{err.msg} column {err.colno}" if err.msg.endswith(" at") else err.msg  # "Invalid control character at"
        if "control character" in err.msg:
            detail += "; a tab or line break inside a string is written \\t or \\n"
        raise DataFileError(
            f"{path}, line {line + err.lineno - 1}, column {err.colno}: not valid JSON ({detail})."
        ) from None
    if not isinstance(value, dict):
        raise DataFileError(f"{path}, line {line}: expected a JSON object, got {type(value).__name__}.")
    return value


def read_texts(path: str | Path, text_fields: Sequence[str], label_field: str | None,
               label2idx: Mapping[str, int]) -> dict[str, list]:
    """Texts to classify: ``.txt`` (one text a line; a blank line is kept as a blank text, so that
    text N is line N: ``lt-tuning classify`` leaves it without a prediction) or a table (TSV, CSV, JSON
    lines) with ``text_fields``; ``label`` too where the table has a ``label_field`` column (gold labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}")
    if path.suffix.lower() == ".txt":
        if len(text_fields) != 1:
            raise DataFileError(f"{path}: a .txt file holds one text a line, but this classifier reads pairs "
                                f"{list(text_fields)}; give a .tsv, .csv or .jsonl file with those columns.")
        lines = read_text(path).split("\n")  # not splitlines(): texts may hold U+2028 and friends
        if lines[-1] == "":
            lines.pop()  # the last line's line break
        texts = [line.rstrip("\r") for line in lines]
        if not any(text.strip() for text in texts):
            raise DataFileError(f"{path}: no texts (the file is empty or blank); write one text a line.")
        return {"text_a": texts}
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(f"{path}: unknown file type {path.suffix!r}; use .txt, .tsv, .csv or .jsonl.")
    rows = list(_rows(io.StringIO(read_text(path), newline=""), fmt, path, text_fields))
    labelled = label_field is not None and bool(rows) and label_field in rows[0][1]
    return columns_from_rows(rows, str(path), text_fields, label_field if labelled else None, label2idx)


def write_table(path: str | Path, columns: Mapping[str, Sequence]) -> None:
    """Write ``columns`` (name -> values) as rows of ``path``, atomically, in the format its suffix
    names and the conventions this module reads: TSV without quoting (a text holding a tab or a
    line break is refused: it would not read back), CSV with standard quoting, or JSON lines."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(f"{path}: unknown output type {path.suffix!r}; use .tsv, .csv or .jsonl.")
    names = list(columns)
    rows = list(zip(*columns.values()))
    out = io.StringIO()
    if fmt == "jsonl":
        out.writelines(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\n" for row in rows)
    else:
        options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "quotechar": None} if fmt == "tsv" else {}
        writer = csv.writer(out, lineterminator="\n", **options)
        writer.writerow(names)
        for number, row in enumerate(rows, start=2):
            try:
                writer.writerow(row)
            except csv.Error:
                raise DataFileError(f"{path}, line {number}: a text holds a tab or a line break, which TSV cannot "
                                    "hold; write .csv or .jsonl instead.") from None
    atomic_write_text(path, out.getvalue())
