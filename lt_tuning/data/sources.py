"""Where a released dataset's files come from.

Lookup order for task ``<task>``:

1. an explicit ``data_dir`` (the folder itself, or a folder holding ``<task>/``);
2. ``$LT_TUNING_DATA/<task>/``;
3. the per-user cache ``$LT_TUNING_CACHE/data/<task>/`` (default ``~/.cache/lt_tuning``);
4. else a download of the authors' release into that cache.

A folder that is found is used as it is: a split missing there is an error naming the file,
never a silent fallback to other data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

RELEASE_URL = "https://raw.githubusercontent.com/GeneZC/Glee/935d238fcd1e86817a5e3c6c000ef7e0ec8670de/long_tailed_datasets"
"""The authors' release (GeneZC/Glee, folder ``long_tailed_datasets``), pinned by its full commit hash."""
RELEASE_FILES = ("train.tsv", "dev.tsv", "test.tsv", "label2idx.json", "verbalizer.json")


def cache_root() -> Path:
    """``$LT_TUNING_CACHE``, else ``$XDG_CACHE_HOME/lt_tuning``, else ``~/.cache/lt_tuning``."""
    if os.environ.get("LT_TUNING_CACHE"):
        return Path(os.environ["LT_TUNING_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lt_tuning"


def resolve_task_dir(task: str, data_dir: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """The folder holding ``task``'s files, following the module's lookup order."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data_dir {root} does not exist.")
        return root / task if (root / task).is_dir() else root
    if os.environ.get("LT_TUNING_DATA"):
        candidate = Path(os.environ["LT_TUNING_DATA"]).expanduser() / task
        if candidate.is_dir():
            return candidate
    cached = cache_root() / "data" / task
    if cached.is_dir():
        return cached
    return download_task(task, cached, url or os.environ.get("LT_TUNING_DATA_URL", RELEASE_URL))


def download_task(task: str, target: Path, url: str = RELEASE_URL) -> Path:
    """Download ``task``'s released files from ``url/<task>/`` into ``target``.

    Files are fetched into a temporary folder that is renamed into place only when all have
    arrived, so an interrupted download never leaves a half-filled cache entry.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=target.parent))
    try:
        for name in RELEASE_FILES:
            source = f"{url.rstrip('/')}/{task}/{name}"
            try:
                with urllib.request.urlopen(source, timeout=60) as response, open(staging / name, "wb") as out:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as err:
                raise RuntimeError(
                    f"Could not download {source} ({err}). Without internet, put the files in a folder and "
                    f"pass data_dir=... or set LT_TUNING_DATA to a folder holding '{task}/'."
                ) from err
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else another process finished the same download first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
