"""Shared helpers of the speed benchmarks: offline models, interleaved timing, result files
(training loops timed in lockstep: ``_lockstep.py``).

Every benchmark compares two ways of doing the same work *side by side in one run*: the two
are run in alternating order (A B, B A, A B, ...) and the figure is the median of the
per-repeat ratios, so a machine that gets busier or quieter during the run moves both sides
alike. No absolute time is a pass mark.

Nothing is downloaded: the tokenizer is a WordPiece vocabulary trained here (``tokenizers``)
on the text of the benchmarked datasets, and models are BERT masked LMs with random weights
built from a config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lt_tuning.results import cpu

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("LT_TUNING_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

#: The benchmark model: small enough for a shared 2-core CPU, big enough that the encoder,
#: not Python, dominates a step (BERT-base is hidden 768, 12 layers, 12 heads, 3072).
SMALL_BERT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
BASE_BERT = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
#: Vocabulary sizes of the study's backbones (bert-base-chinese, bert-base-uncased).
VOCAB_BERT_BASE_CHINESE = 21128
VOCAB_BERT_BASE_UNCASED = 30522
#: The study's optimisation recipe, passed explicitly to the modules and used by the hand loop.
RECIPE = dict(learning_rate=1e-5, weight_decay=0.0, warmup_proportion=0.1, loss="cross_entropy", focal_gamma=1.0)


# --- environment ---------------------------------------------------------------------------


def quiet() -> None:
    """Silence progress bars and info logs of datasets/transformers/Lightning."""
    import datasets
    import pytorch_lightning  # noqa: F401  (sets its loggers' levels on import: import first)
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    transformers.utils.logging.disable_progress_bar()


def base_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats (median taken)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json/.md go")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="folder holding <task>/ folders")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: on a shared, oversubscribed CPU two OpenMP threads make "
        "step times erratic, several-fold slower at random)",
    )
    return parser


def start(args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    """Common start of a benchmark: quiet logs, thread count; returns (start time, environment)."""
    import torch

    started = time.perf_counter()
    quiet()
    torch.set_num_threads(args.threads)
    return started, environment()


def environment() -> dict[str, Any]:
    """Versions and machine facts that go with every result file."""
    import datasets
    import pytorch_lightning as pl
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "datasets": datasets.__version__,
        **cpu(),  # bf16 speed hinges on its bf16 instructions
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_at_start": list(os.getloadavg()),
    }


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A scratch folder (tokenizer, models, caches) removed at the end; no user cache is touched."""
    with tempfile.TemporaryDirectory(prefix="lt_bench_") as folder:
        path = Path(folder)
        old = os.environ.get("LT_TUNING_CACHE")
        os.environ["LT_TUNING_CACHE"] = str(path / "lt_cache")
        try:
            yield path
        finally:
            if old is None:
                os.environ.pop("LT_TUNING_CACHE", None)
            else:
                os.environ["LT_TUNING_CACHE"] = old


# --- tokenizer and models ------------------------------------------------------------------


def corpus_texts(data_dir: Path, tasks: Sequence[str]) -> list[str]:
    """Every text of the tasks' splits at hand, plus verbalizer words and template words."""
    from lt_tuning.data import tasks as task_modules

    texts: list[str] = []
    for task in tasks:
        folder = data_dir / task
        texts += list(json.loads((folder / "verbalizer.json").read_text(encoding="utf-8")).values())
        for split in ("train", "dev", "test"):
            path = folder / f"{split}.tsv"
            if path.exists():
                lines = path.read_text(encoding="utf-8").split("\n")[1:]  # not splitlines: texts hold U+2028
                texts += [line.rsplit("\t", 1)[0] for line in lines]
    for module in vars(task_modules).values():
        spec = getattr(module, "spec", None)
        if spec is not None:
            texts.append(spec.template.replace("{", " ").replace("}", " "))
    return texts


def scratch_task(source: Path, target: Path) -> Path:
    """``target`` as a task folder whose train.tsv is ``source``'s dev + test rows (other files copied).

    For datasets whose train split is not in this copy of the data (R52, IFLYTEK): an epoch of
    dev+test stands in for a training epoch.
    """
    target.mkdir(parents=True, exist_ok=True)
    for name in ("label2idx.json", "verbalizer.json", "dev.tsv", "test.tsv"):
        shutil.copy(source / name, target / name)
    dev = (source / "dev.tsv").read_bytes()
    test_rows = (source / "test.tsv").read_bytes().split(b"\n", 1)[1]  # without its header
    (target / "train.tsv").write_bytes(dev + (b"" if dev.endswith(b"\n") else b"\n") + test_rows)
    return target


def build_tokenizer(
    folder: Path, data_dir: Path, tasks: Sequence[str] = ("cmid", "iflytek", "r52"), vocab_size: int = 16000
) -> str:
    """A lowercase BERT WordPiece vocabulary trained on the tasks' text, as a ``vocab.txt`` folder.

    Pre-tokenization is BERT's (every CJK character a token, punctuation split), so sequence
    lengths come out close to those of bert-base-chinese / bert-base-uncased. The folder
    loads with ``AutoTokenizer`` (fast) and with the Python ``BertTokenizerLegacy`` alike.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS)
    backend.train_from_iterator(corpus_texts(data_dir, tasks), trainer=trainer)
    vocab = sorted(backend.get_vocab().items(), key=lambda item: item[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(token for token, _ in vocab) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return str(folder)


def build_masked_lm(
    folder: Path, tokenizer_dir: str, size: dict[str, int] | None = None, vocab_size: int | None = None,
    max_position_embeddings: int = 512, seed: int = 0,
) -> str:
    """A randomly initialised BERT masked LM (+ its tokenizer) that ``from_pretrained`` loads.

    ``vocab_size`` may exceed the tokenizer's (ids never used, but the output projection has
    the cost of a real backbone's vocabulary).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)), max_position_embeddings=max_position_embeddings,
        **(size or SMALL_BERT),
    )
    model = BertForMaskedLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def model_facts(path: str) -> dict[str, Any]:
    """Size of the masked LM saved at ``path`` (for the result files)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    encoder_layer = 4 * hidden * hidden + 2 * hidden * config.intermediate_size
    return {
        "architecture": "BERT masked LM, random weights",
        "hidden_size": hidden,
        "num_layers": layers,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": vocab,
        "encoder_matrix_params_M": round(layers * encoder_layer / 1e6, 2),
        "embedding_params_M": round((vocab + config.max_position_embeddings) * hidden / 1e6, 2),
    }


# --- timing --------------------------------------------------------------------------------


def interleaved(
    candidates: dict[str, Callable[[], float | None]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each candidate ``repeats`` times, alternating their order every repeat.

    A candidate returns the figure it measured itself (seconds, or seconds per step), or None
    to be timed from the outside. ``warmup`` untimed rounds come first.
    """
    names = list(candidates)
    out: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            value = candidates[name]()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                out[name].append(elapsed if value is None else float(value))
    return out


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


# --- training loops ------------------------------------------------------------------------


def encoded_batches(dm, split: str, input_format: str, batch_size: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` shuffled, dynamically padded batches of ``split`` (cycled if the split is short)."""
    import torch
    from torch.utils.data import DataLoader

    dataset = dm.encode(split, input_format)
    generator = torch.Generator().manual_seed(seed)
    batches: list[dict] = []
    while len(batches) < count:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=dm.collator())
        for batch in loader:
            if len(batch["input_ids"]) == batch_size:
                batches.append(batch)
            if len(batches) == count:
                break
    return batches


# --- results -------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(ROOT)
    return " ".join(["python", shlex.quote(str(script))] + [shlex.quote(a) for a in sys.argv[1:]])


def write_results(name: str, args: argparse.Namespace, env: dict[str, Any], started: float, markdown: str,
                  **fields: Any) -> None:
    """Write ``<name>.json`` (command, settings from ``args``, ``fields``, environment) and
    ``<name>.md`` under ``args.results_dir``, and print the table."""
    results_dir = args.results_dir
    payload = {
        "benchmark": name,
        "command": command_line(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "settings": vars(args) | {"results_dir": str(results_dir), "data_dir": str(args.data_dir)},
        **fields,
        "environment": env,
    }
    env["load_average_at_end"] = list(os.getloadavg())
    results_dir.mkdir(parents=True, exist_ok=True)
    text_json = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    (results_dir / f"{name}.json").write_text(text_json, encoding="utf-8")
    text = f"{markdown}\n\nCommand: `{payload['command']}` ({payload['wall_time_s']} s wall)\n"
    (results_dir / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)
