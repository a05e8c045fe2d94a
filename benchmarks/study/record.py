"""What a run's result depends on, recorded beside it so that the run can be repeated and a
different result explained: the repository's commit and whether its tree was clean, the sha256 of
every file the run reads (config YAMLs, backbone folder, dataset files), torch's threads, library
versions and the CPU. ``reproduce.py`` writes it into each ``run.json``; ``rerun.py`` builds it
again for the rerun and names what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import platform
import subprocess
import warnings
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from lt_tuning.results import cpu

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "pytorch-lightning", "transformers", "tokenizers", "datasets", "torchmetrics", "numpy")
THREAD_ENV = ("OMP_", "MKL_")  # environment variables that set the math libraries' threads


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state(root: Path, allow_dirty: bool, exclude: Path | None = None) -> dict[str, Any]:
    """HEAD's commit and ``git status --porcelain`` of ``root``, leaving out ``exclude`` (the grid's
    own output folder, which fills up as it runs); ``clean`` when nothing else is changed, and
    whether a run was allowed from a dirty tree."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    inside = exclude is not None and exclude.resolve().is_relative_to(root.resolve())
    pathspec = [".", f":(exclude){exclude.resolve().relative_to(root.resolve())}"] if inside else []
    changes = git("status", "--porcelain", "--", *pathspec).splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "clean": not changes, "changes": changes,
            "allow_dirty": allow_dirty}


def resolved_config(cli_args: list[str], root: Path) -> dict[str, Any]:
    """The configuration ``lt-tuning <cli_args>`` runs with (``--print_config``, run from ``root``),
    less the log folder, which is where a run writes and not what it computes."""
    from lt_tuning.commands.lightning import build_cli

    printed = io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # args given while sys.argv is a script's
        try:
            build_cli([*cli_args, "--print_config"])
        except SystemExit as done:  # --print_config prints, then exits 0; a bad config exits non-zero
            if done.code:
                raise
    config = yaml.safe_load(printed.getvalue())
    config["trainer"].pop("default_root_dir", None)
    return config


def data_files(data: Mapping[str, Any], root: Path) -> dict[str, Path]:
    """The files a DataModule config reads, by name: a released task's files (train/dev/test,
    label2idx, verbalizer), else the files its arguments name (own data)."""
    from lt_tuning.data.sources import RELEASE_FILES, resolve_task_dir
    from lt_tuning.data.tasks import ReleasedTaskDataModule

    module_name, _, class_name = data["class_path"].rpartition(".")
    module = getattr(importlib.import_module(module_name), class_name)
    args = data.get("init_args") or {}
    if issubclass(module, ReleasedTaskDataModule):
        folder = resolve_task_dir(module.spec.name, root / args["data_dir"] if args.get("data_dir") else None)
        return {name: folder / name for name in RELEASE_FILES}
    return {key: root / value for key, value in args.items() if isinstance(value, str) and (root / value).is_file()}


def run_record(cli_args: list[str], root: Path = ROOT, allow_dirty: bool = False,
               exclude: Path | None = None) -> dict[str, Any]:
    """Everything ``lt-tuning <cli_args>``, run from ``root``, gets its result from, as a JSON-able dict.

    ``exclude``: a folder left out of the clean-tree check (the grid's output). The backbone folder
    is the resolved ``data.init_args.model_name_or_path``; a hub name is recorded, not hashed.
    """
    import torch

    threads_env = {key: value for key, value in sorted(os.environ.items()) if key.startswith(THREAD_ENV)}
    config = resolved_config(cli_args, root)
    configs = [cli_args[i + 1] for i, arg in enumerate(cli_args) if arg == "--config"]
    backbone = config["data"]["init_args"].get("model_name_or_path")
    folder = root / backbone if backbone else None
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md") if folder else []
    data = data_files(config["data"], root)
    return {
        "git": git_state(root, allow_dirty, exclude),
        "files": {
            "configs": {path: sha256(root / path) for path in configs},
            "backbone": {"path": backbone, "files": {p.relative_to(folder).as_posix(): sha256(p) for p in weights}},
            "data": {name: {"path": str(path), "sha256": sha256(path)} for name, path in data.items()},
        },
        "versions": {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}},
        "machine": {**cpu(), "torch_threads": torch.get_num_threads(), "thread_env": threads_env},
        "config": config,
    }


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys (``files.backbone.files.model.safetensors``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff_records(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``key: recorded -> now`` for every entry of two records that differs (checksums, versions,
    commit, threads, CPU, resolved config); whether a dirty tree was allowed is not a cause, so left out."""
    old, new = flatten(recorded), flatten(now)
    keys = sorted((old.keys() | new.keys()) - {"git.allow_dirty"})
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]
