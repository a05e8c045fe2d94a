"""The corpus' files: which are read, their sha256 (what the caches are keyed by), their texts as Arrow."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from lt_tuning.data.reading import DataFileError, read_labelled_file
from lt_tuning.data.tasks import TASKS

TEXTS = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("int32")})
#: Rows per record batch of the texts' Arrow file.
ARROW_BATCH = 50_000


def corpus_files(tasks: Sequence[str], task_dirs: Sequence[Path], text_files: Sequence[str],
                 skip_missing: bool) -> list[tuple[Path, list[str] | None]]:
    """The files read, in order: each task's train split in ``task_dirs`` (with its text columns),
    then the text files (with None); a folder stands for every ``*.txt`` file under it, sorted."""
    found: list[tuple[Path, list[str] | None]] = []
    for task, folder in zip(tasks, task_dirs):
        path = folder / "train.tsv"
        if not path.is_file():
            if not skip_missing:
                raise FileNotFoundError(f"{path}: the {task} train split is missing (or set skip_missing=true).")
            warnings.warn(f"{path} is missing: the {task} train split is left out of the corpus.", stacklevel=3)
            continue
        found.append((path, list(TASKS[task].text_fields)))
    for name in text_files:
        path = Path(name)
        if path.is_dir():
            texts = sorted(file for file in path.rglob("*.txt") if file.is_file())
            if not texts:
                raise DataFileError(f"{path}: no *.txt file in this folder; put the corpus there as UTF-8 "
                                    "text files, one text a line, or list the files in text_files.")
            found += [(file, None) for file in texts]
        elif path.is_file():
            found.append((path, None))
        else:
            raise FileNotFoundError(f"{path}: no such text file or folder (text_files).")
    if not found:
        raise DataFileError(f"The corpus is empty: none of the train splits of {list(tasks)} is there.")
    return found


def file_digests(files: Sequence[tuple[Path, list[str] | None]]) -> list[tuple[str, str]]:
    """(file, sha256) of each file, read in chunks."""
    digests = []
    for path, _ in files:
        with path.open("rb") as handle:
            digests.append((str(path), hashlib.file_digest(handle, "sha256").hexdigest()))
    return digests


def corpus_texts(files: Sequence[tuple[Path, list[str] | None]], cache_dir: Path, fingerprint: str) -> datasets.Dataset:
    """Every text of ``files`` in order, as Arrow on disk (memory-mapped): ``text``, and ``source``,
    the index of its file. Bad files raise the reader's own error, naming the file and the fix."""
    sources = [(source, str(path), fields) for source, (path, fields) in enumerate(files)]
    try:
        return datasets.Dataset.from_generator(  # a list in gen_kwargs: each file is a shard of its own
            _read_texts, features=TEXTS, gen_kwargs={"files": sources}, cache_dir=str(cache_dir),
            fingerprint=fingerprint, writer_batch_size=ARROW_BATCH,
        )
    except DatasetGenerationError as err:
        if isinstance(err.__cause__, (DataFileError, OSError)):
            raise err.__cause__ from None
        raise


def _read_texts(files: list[tuple[int, str, list[str] | None]]) -> Iterator[dict]:
    """Rows ``{"text", "source"}`` of ``(source, path, text columns)`` files in order: a labelled
    file's texts (``text_a`` column, then ``text_b``), a text file's non-blank lines."""
    for source, path, text_fields in files:
        if text_fields is None:
            texts = _lines(path)
        else:
            columns = read_labelled_file(path, text_fields, label_field=None, label2idx=None)
            texts = (text for field in ("text_a", "text_b") for text in columns.get(field, []))
        for text in texts:
            yield {"text": text, "source": source}


def _lines(path: str) -> Iterator[str]:
    """The non-blank lines of a UTF-8 text file, a line at a time (split at "\\n" only: texts
    hold U+2028; a byte order mark skipped); errors name the file and the line."""
    offset, found = 0, False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path}, line {number}: not UTF-8 (byte {offset + err.start} of the file: "
                                    f"{err.reason}); re-save the file as UTF-8.") from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                found = True
                yield line
    if not found:
        raise DataFileError(f"{path}: no text (the file is empty or blank); add text or leave the file out.")
