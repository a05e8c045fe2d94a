"""Shared fixtures: offline, isolated caches, tokenizers written by the tests themselves."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import pytest

# Read at import time by transformers/datasets: no test may reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# One math thread a process (read when torch loads; subprocesses inherit it): the tests' tiny models
# run faster on one thread than on two that wait for each other, and the suite runs on a worker per core.
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LT_TUNING_SHARED_DATA", ROOT.parent / "shared" / "data"))
TASKS = ("cmid", "iflytek", "ctc", "msra", "r52")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# The slowest test files (seconds of a worker, measured), started first: the workers (a file stays
# on one) then finish together instead of one running the last long file alone.
SLOWEST_FIRST = ("test_pretraining.py", "test_tune.py", "test_multiprocess.py", "test_inference.py", "test_cli.py",
                 "test_notebook.py", "test_reliability.py", "test_models.py")


def pytest_configure(config: pytest.Config) -> None:
    """In pytest-xdist's controller, import the training stack before the workers report: it
    rebuilds their warnings' categories (Lightning's, torch's) in one thread per worker, and two
    threads importing torch for the first time at once fail ("partially initialized module 'torch'")."""
    if not hasattr(config, "workerinput"):
        import pytorch_lightning  # noqa: F401  (torch, lightning_fabric, torchmetrics)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order, then test order kept


def write_bert_tokenizer(folder: Path, tokens: list[str]) -> str:
    """Write a BERT WordPiece vocabulary (special tokens first) that AutoTokenizer loads."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + [t for t in dict.fromkeys(tokens) if t not in SPECIAL_TOKENS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return str(folder)


def corpus_tokens(task: str, limit: int | None = None, train_text: bool = True) -> list[str]:
    """Characters/words of a task's verbalizer, template words and (part of) its train text."""
    folder = SHARED_DATA / task
    words: list[str] = []
    verbalizer = json.loads((folder / "verbalizer.json").read_text(encoding="utf-8"))
    text = " ".join(verbalizer.values()) + " 这个问题的意图是？。句话描述物品属于标准类别中 this is news ."
    if train_text:
        lines = require_split(task, "train").read_text(encoding="utf-8").splitlines()[1 : (limit + 1) if limit else None]
        text += " ".join(lines)
    for chunk in text.lower().split():
        for token in _split_cjk(chunk):
            words.append(token)
    return words


def _split_cjk(chunk: str) -> list[str]:
    out, word = [], ""
    for char in chunk:
        if "\u4e00" <= char <= "\u9fff" or not char.isalnum():
            if word:
                out.append(word)
                word = ""
            out.append(char)
        else:
            word += char
    if word:
        out.append(word)
    return out


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path_factory, monkeypatch):
    """No downloads and no writes to the user's cache from any test."""
    monkeypatch.setenv("LT_TUNING_CACHE", str(tmp_path_factory.getbasetemp() / "lt_cache"))
    monkeypatch.delenv("LT_TUNING_DATA", raising=False)
    monkeypatch.setenv("LT_TUNING_DATA_URL", "file:///nonexistent-lt-tuning-release")


@pytest.fixture
def run_script(monkeypatch):
    """``run_script("bench_x.py", *args)`` runs ``benchmarks/bench_x.py`` (``"study/rerun.py"``:
    ``benchmarks/study/rerun.py``) as ``python <script> args``, in this process: no new interpreter has
    to import torch again. Torch's thread count is restored."""
    import torch

    threads = torch.get_num_threads()

    def run(name: str, *args) -> None:
        script = ROOT / "benchmarks" / name
        monkeypatch.syspath_prepend(str(script.parent))  # the script's own imports, as python would find them
        monkeypatch.setattr(sys, "argv", [script.name, *map(str, args)])
        runpy.run_path(str(script), run_name="__main__")

    yield run
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def zh_tokenizer_dir(tmp_path_factory) -> str:
    """A tokenizer covering the verbalizers and templates of all five tasks, and CMID/CTC train text.

    Only CMID and CTC text goes in, whichever other train splits happen to be present, so the
    vocabulary (and every tiny model built on it) is the same on every copy of the data.
    """
    tokens: list[str] = []
    for task in TASKS:
        tokens += corpus_tokens(task, limit=3000, train_text=task in ("cmid", "ctc"))
    return write_bert_tokenizer(tmp_path_factory.mktemp("zh_tok"), tokens)


VERBALIZER = [[5], [6, 7], [8, 9, 10]]  # one-, two- and three-token label words (token ids)


def prompt_module(path: str, **kwargs):
    """A 3-class PromptTuningModule on ``path`` whose label words are :data:`VERBALIZER`."""
    from lt_tuning import PromptTuningModule, Verbalizer

    return PromptTuningModule(path, num_classes=3, verbalizer=Verbalizer.from_token_ids(VERBALIZER), **kwargs)


def prompt_batch(vocab_size: int, seed: int = 0) -> dict:
    """Four random prompt-format examples (one padded), [MASK] at varied positions, labels 0, 1, 2, 1."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (4, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    input_ids[1, 9:] = 0
    mask_positions = torch.tensor([3, 8, 11, 0])
    input_ids[torch.arange(4), mask_positions] = 4  # [MASK]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "mask_positions": mask_positions,
            "labels": torch.tensor([0, 1, 2, 1])}


def require_split(task: str, split: str) -> Path:
    path = SHARED_DATA / task / f"{split}.tsv"
    if not path.exists():
        pytest.skip(f"{path} is absent from the shared data (the release's {task} {split} split is not in this copy)")
    return path


def write_cmid_run(folder: Path, model_dir: str, module: str, data: dict | None = None, model: dict | None = None,
                   trainer: dict | None = None, **sections: dict) -> Path:
    """``folder/run.yaml``, a short CMID run as a user's config file: the shared data, ``model_dir``'s
    tokenizer, ``module`` with ``model`` as its arguments, logs in ``folder/runs``, no progress bar
    or model summary; ``data``, ``trainer`` and other ``sections`` (e.g. ``plots``) add to it."""
    import yaml

    config = {"data": {"class_path": "lt_tuning.CMIDDataModule",
                       "init_args": {"data_dir": str(SHARED_DATA), "model_name_or_path": model_dir,
                                     "cache_dir": str(folder / "cache"), **(data or {})}},
              "model": {"class_path": module, "init_args": model or {}},
              "trainer": {"default_root_dir": str(folder / "runs"), "enable_progress_bar": False,
                          "enable_model_summary": False, **(trainer or {})},
              **sections}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def save_tiny_masked_lm(folder: Path, tokenizer_dir: str, arch: str = "bert", seed: int = 0) -> str:
    """A randomly initialised 2-layer masked LM (+ the tokenizer) that Auto classes load.

    The MLM head's LayerNorm gets random values, so a test can tell it from a fresh one.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if arch == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=128, **size))
        norm = model.cls.predictions.transform.LayerNorm
    else:
        config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=130, pad_token_id=0, **size)
        model = RobertaForMaskedLM(config)
        norm = model.lm_head.layer_norm
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, zh_tokenizer_dir) -> str:
    return save_tiny_masked_lm(tmp_path_factory.mktemp("tiny_bert"), zh_tokenizer_dir, "bert")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory, zh_tokenizer_dir) -> str:
    return save_tiny_masked_lm(tmp_path_factory.mktemp("tiny_roberta"), zh_tokenizer_dir, "roberta")


@pytest.fixture(scope="session")
def saved(tmp_path_factory, tiny_bert_dir, tiny_roberta_dir):
    """One tiny checkpoint per trained-model variant (tests/variants.py), with its test texts and
    probabilities, built on first use: shared by the inference, ONNX and serving tests."""
    from variants import Checkpoints

    require_split("msra", "test")
    backbones = {"bert": tiny_bert_dir, "roberta": tiny_roberta_dir}
    return Checkpoints(tmp_path_factory.mktemp("saved"), SHARED_DATA, backbones)
