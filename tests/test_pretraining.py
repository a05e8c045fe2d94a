"""Own backbone: WordPiece vocabulary, corpus packing and masking, masked-LM pretraining, reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, SHARED_DATA, require_split
from safetensors import safe_open
from torch.utils.data import DistributedSampler
from transformers import AutoModelForMaskedLM, AutoTokenizer

from lt_tuning import (
    CMIDDataModule,
    ClsTuningModule,
    MaskedLMCorpusDataModule,
    MaskedLMPretrainingModule,
    PromptTuningModule,
)
from lt_tuning.commands.lightning import build_cli
from lt_tuning.data import DataFileError, corpus as corpus_module, read_labelled_file, train_wordpiece_tokenizer
from lt_tuning.data import corpus_files, packing
from lt_tuning.data.heldout import language
from lt_tuning.data.reading import read_text
from lt_tuning.data.tasks import TASKS
from lt_tuning.models.backbone import load_encoder, load_masked_lm
from lt_tuning.models.masked_lm import masked_logits, masked_token_accuracy

BACKBONE = ROOT / "examples" / "backbone"
BUDGETS = ROOT / "benchmarks" / "results" / "backbone_budgets"


def test_wordpiece_vocab_splits_cjk_lowercases_and_loads(tmp_path):
    texts = ["头痛怎么办", "头痛吃什么药", "Hello World", "hello world again"] * 5
    train_wordpiece_tokenizer(texts, tmp_path, vocab_size=200, min_frequency=1)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.is_fast
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    encoded = tokenizer("头痛HELLO", "药")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", "头", "痛", "hello", "[SEP]", "药", "[SEP]"]
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1]
    assert tokenizer("怎")["input_ids"][1] != tokenizer.unk_token_id
    assert tokenizer("龘")["input_ids"][1] == tokenizer.unk_token_id  # never seen


ENGLISH = [  # a second language: held out and reported apart from the Chinese texts
    f"the {noun} of the company rose {n} pct in the {period} , it said ." for n in range(60)
    for noun, period in (("profit", "first quarter"), ("revenue", "year"), ("output", "month"))
]


@pytest.fixture(scope="module")
def cmid_corpus(tmp_path_factory) -> MaskedLMCorpusDataModule:
    require_split("cmid", "train")
    english = tmp_path_factory.mktemp("text") / "english.txt"
    english.write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    corpus = MaskedLMCorpusDataModule(
        tasks=["cmid"], data_root=str(SHARED_DATA), text_files=[str(english)], vocab_size=3000, max_length=32,
        batch_size=8, heldout_fraction=0.05, cache_dir=str(tmp_path_factory.mktemp("corpus")),
    )
    corpus.setup("fit")
    return corpus


def test_corpus_reads_train_only_and_holds_out_texts_by_language(cmid_corpus):
    assert [Path(source["file"]).name for source in cmid_corpus.sources] == ["train.tsv", "english.txt"]
    assert [source["texts"] for source in cmid_corpus.sources] == [8578, 180]
    heldout = cmid_corpus.heldout_texts
    assert cmid_corpus.languages == ["zh", "en"]
    assert len(heldout["zh"]) + len(heldout["en"]) == round(0.05 * (8578 + 180))
    assert set(heldout["en"]) <= set(ENGLISH) and 0 < len(heldout["en"]) < 180
    cmid = read_labelled_file(SHARED_DATA / "cmid" / "train.tsv", ["text"], None, None)["text_a"]
    assert sorted([*cmid_corpus.train_texts["text"], *heldout["zh"], *heldout["en"]]) == sorted(cmid + ENGLISH)
    assert set(cmid_corpus.heldout_batches) == {"zh", "en"}


def test_text_files_and_folders_are_read_a_line_at_a_time_into_arrow_files_on_disk(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_bytes(b"\xef\xbb\xbf" + "头痛\r\n\n  \nline\u2028same line\n".encode())
    (folder / "sub" / "a.txt").write_text("发烧\nno newline at the end", encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file\n", encoding="utf-8")
    single = tmp_path / "single.txt"
    single.write_text("one more\n", encoding="utf-8")
    corpus = MaskedLMCorpusDataModule(text_files=[str(folder), str(single)], cache_dir=str(tmp_path / "cache"))
    assert [path for path, _ in corpus.files] == [folder / "b.txt", folder / "sub" / "a.txt", single]
    # Lines split at "\n" only (U+2028 stays inside a text), blank ones skipped, the byte order mark dropped.
    assert list(corpus.texts["text"]) == ["头痛\r", "line\u2028same line", "发烧", "no newline at the end", "one more"]
    assert [source["texts"] for source in corpus.sources] == [2, 2, 1]
    assert corpus.texts.cache_files and all(Path(file["filename"]).is_relative_to(tmp_path / "cache")
                                            for file in corpus.texts.cache_files)  # Arrow on disk, memory-mapped


def test_heldout_texts_are_the_first_of_a_seeded_permutation_at_most_heldout_max_texts(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"text {i}\n" for i in range(1000)), encoding="utf-8")
    corpus = MaskedLMCorpusDataModule(text_files=[str(texts)], heldout_fraction=0.1, heldout_max_texts=30, seed=3,
                                      cache_dir=str(tmp_path / "cache"))
    order = np.random.default_rng(3).permutation(1000)
    assert corpus.heldout_rows.tolist() == sorted(order[:30]) and corpus.heldout_rows.dtype == np.int32
    assert corpus.heldout_texts == {"en": [f"text {i}" for i in sorted(order[:30])]}
    assert list(corpus.train_texts["text"]) == [f"text {i}" for i in sorted(order[30:])]
    uncapped = MaskedLMCorpusDataModule(text_files=[str(texts)], heldout_fraction=0.1, heldout_max_texts=None, seed=3,
                                        cache_dir=str(tmp_path / "cache"))
    assert uncapped.heldout_rows.tolist() == sorted(order[:100])


@pytest.mark.parametrize(("content", "message"), [
    ("头痛\n".encode() + "café\n".encode("latin-1"), r"bad\.txt, line 2: not UTF-8 \(byte 10 of the file: .*re-save"),
    (b"", r"bad\.txt: no text \(the file is empty or blank\); add text or leave the file out"),
    (b"\n  \n\n", r"bad\.txt: no text \(the file is empty or blank\)"),
])
def test_a_bad_text_file_fails_before_training_naming_the_file_and_line(tmp_path, content, message):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("头痛\n", encoding="utf-8")
    (folder / "bad.txt").write_bytes(content)
    with pytest.raises(DataFileError, match=message):
        MaskedLMCorpusDataModule(text_files=[str(folder)], cache_dir=str(tmp_path / "cache")).prepare_data()


def test_a_folder_without_text_files_or_a_missing_path_fails_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no .txt here\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"empty: no \*\.txt file in this folder"):
        MaskedLMCorpusDataModule(text_files=[str(tmp_path / "empty")]).prepare_data()
    with pytest.raises(FileNotFoundError, match=r"absent\.txt: no such text file or folder"):
        MaskedLMCorpusDataModule(text_files=[str(tmp_path / "absent.txt")]).prepare_data()


def test_a_bad_text_file_stops_lt_tuning_fit_before_training(tmp_path):
    bad = tmp_path / "corpus.txt"
    bad.write_bytes("头痛\n".encode() + "发烧\n".encode("gb18030"))
    with pytest.raises(DataFileError, match=r"corpus\.txt, line 2: not UTF-8"):
        build_cli(["fit", "--config", str(ROOT / "examples" / "pretrain" / "default.yaml"), "--data.init_args.tasks=[]",
                   f"--data.init_args.text_files=[{bad}]", f"--data.init_args.tokenizer={BACKBONE}",
                   f"--data.init_args.cache_dir={tmp_path / 'cache'}", f"--trainer.default_root_dir={tmp_path}",
                   f"--trainer.callbacks.init_args.output_dir={tmp_path / 'out'}",
                   f"--trainer.callbacks.init_args.budgets_dir={tmp_path / 'budgets'}"])
    assert not (tmp_path / "budgets").exists()  # not even the budget-0 export: no training started


def test_tokenization_runs_on_num_proc_processes_and_a_second_run_loads_the_cache(tmp_path, monkeypatch):
    # At a tenth of the sizes: a pass starts a process per 1,000 texts (BATCH) instead of 10,000.
    monkeypatch.setattr(packing, "BATCH", 1000)
    folder = tmp_path / "texts"
    folder.mkdir()
    lines = [f"{i} {ENGLISH[i % len(ENGLISH)]}" for i in range(2_400)]
    for name, part in (("a.txt", lines[:1_000]), ("b.txt", lines[1_000:])):
        (folder / name).write_text("\n".join(part) + "\n", encoding="utf-8")

    def corpus(cache: str, num_proc: int) -> MaskedLMCorpusDataModule:
        return MaskedLMCorpusDataModule(text_files=[str(folder)], tokenizer=str(BACKBONE), max_length=32,
                                        num_proc=num_proc, cache_dir=str(tmp_path / cache))

    two = corpus("two", 2)
    blocks = list(two.encode("train")["input_ids"])
    assert len(two.tokenized("train").cache_files) == 2  # one Arrow shard per process
    # The same blocks and counts on any number of processes: each group of 1,000 texts packed by one.
    one = corpus("one", 1)
    assert list(one.encode("train")["input_ids"]) == blocks
    for language_ in ("zh", "en"):
        assert (one._train_token_counts[language_] == two._train_token_counts[language_]).all()
    # A chunk at a time (each chunk's passes on their own processes): the same held-out texts, blocks, counts.
    with monkeypatch.context() as chunks:
        chunks.setattr(packing, "CHUNK", 2_000)
        chunked = corpus("chunked", 2)
        assert list(chunked.encode("train")["input_ids"]) == blocks and chunked.heldout_texts == two.heldout_texts
        assert len(chunked.tokenized("train").cache_files) == 3  # 2,000 texts on 2 processes, the other 352 on 1
        for language_ in ("zh", "en"):
            assert (chunked._train_token_counts[language_] == two._train_token_counts[language_]).all()

    def never(*args, **kwargs):
        raise AssertionError("read or tokenized again")

    for module, name in ((corpus_files, "_read_texts"), (packing, "tokenize"), (packing, "pack")):
        monkeypatch.setattr(module, name, never)
    again = corpus("two", 2)  # a second run over the same files and settings: the cache
    assert list(again.encode("train")["input_ids"]) == blocks
    assert again.heldout_texts == two.heldout_texts


def test_vocabulary_is_trained_on_batches_of_the_training_texts(tmp_path, monkeypatch):
    require_split("cmid", "train")
    batches = []

    def spy(texts, *args, **kwargs):
        assert not isinstance(texts, list)  # an iterator: the texts are never all in memory at once
        batches.extend(texts)
        return train_wordpiece_tokenizer(batches, *args, **kwargs)

    monkeypatch.setattr(corpus_module, "train_wordpiece_tokenizer", spy)
    corpus = MaskedLMCorpusDataModule(tasks=["cmid"], data_root=str(SHARED_DATA), vocab_size=500,
                                      cache_dir=str(tmp_path))
    assert corpus.tokenizer.convert_ids_to_tokens(range(3)) == ["[PAD]", "[UNK]", "[CLS]"]
    assert max(len(batch) for batch in batches) <= 1000
    # The training texts, then each template and verbalizer word twice (to clear min_frequency), as before.
    assert [text for batch in batches for text in batch] == [*corpus.train_texts["text"], *corpus._prompt_words() * 2]


def test_each_process_trains_and_validates_on_its_own_share(cmid_corpus, monkeypatch):
    blocks = cmid_corpus.datasets["train"]
    samplers = []
    for rank in (0, 1):
        # a 2-process run: the strategy's broadcast hands every process rank 0's seed (here 7)
        strategy = SimpleNamespace(broadcast=lambda seed: 7)
        monkeypatch.setattr(cmid_corpus, "trainer", SimpleNamespace(world_size=2, global_rank=rank, strategy=strategy))
        samplers.append(cmid_corpus.train_dataloader().sampler)
        assert len(cmid_corpus.val_dataloader()) == (len(cmid_corpus.heldout_batches["zh"]) + 1 + 1 - rank) // 2
    assert all(isinstance(sampler, DistributedSampler) and sampler.num_replicas == 2 for sampler in samplers)
    shares = [list(sampler) for sampler in samplers]
    assert len(shares[0]) == len(shares[1]) == (len(blocks) + 1) // 2
    assert set(shares[0]) | set(shares[1]) == set(range(len(blocks)))  # every block, each on one process
    assert len(set(shares[0]) & set(shares[1])) == len(blocks) % 2  # but the one padding an odd count
    # DistributedSampler's order (held as a tensor, not a list of every index), a new one each epoch.
    assert [sampler.seed for sampler in samplers] == [7, 7]
    assert shares == [list(DistributedSampler(blocks, 2, rank, shuffle=True, seed=7)) for rank in (0, 1)]
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != shares[0]
    monkeypatch.setattr(cmid_corpus, "heldout_batches", {"zh": cmid_corpus.heldout_batches["zh"][:1]})
    with pytest.raises(ValueError, match="1 held-out batch\\(es\\) for 2 processes: raise heldout_fraction"):
        cmid_corpus.val_dataloader()


def test_corpus_vocabulary_covers_template_and_verbalizer(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    verbalizer = json.loads((SHARED_DATA / "cmid" / "verbalizer.json").read_text(encoding="utf-8"))
    for word in [*verbalizer.values(), "这个问题的意图是"]:
        assert tokenizer.unk_token_id not in tokenizer(word, add_special_tokens=False)["input_ids"], word


def test_packing_keeps_every_token_in_order(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    blocks = cmid_corpus.encode("heldout_zh")["input_ids"]
    assert all(block[0] == tokenizer.cls_token_id and len(block) <= 32 for block in blocks)
    stream = [token for text in cmid_corpus.heldout_texts["zh"]
              for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]]
    assert [token for block in blocks for token in block[1:]] == stream


def test_masking_is_80_10_10_at_15_percent_and_never_special(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    blocks = cmid_corpus.encode("train")
    original = [blocks[i] for i in range(2000)]
    batch = cmid_corpus.collator(seed=1)([dict(block) for block in original])
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["input_ids"]) for b in original], batch_first=True)
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    chosen = batch["labels"] != -100
    assert not (chosen & special).any()
    assert chosen.sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    assert (batch["labels"][chosen] == ids[chosen]).all()
    masked = (batch["input_ids"] == tokenizer.mask_token_id)[chosen].float().mean()
    kept = (batch["input_ids"] == ids)[chosen].float().mean()
    assert masked == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1 + 0.1 / len(tokenizer), abs=0.02)  # a random token may be itself


def test_heldout_masking_is_fixed(cmid_corpus):
    first, second = cmid_corpus.masked_heldout("zh"), cmid_corpus.masked_heldout("zh")
    assert all(torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
               for a, b in zip(first, second))


def test_vocabulary_projection_only_at_masked_positions(cmid_corpus):
    torch.manual_seed(0)
    module = MaskedLMPretrainingModule(cmid_corpus.vocab_size, hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64).eval()
    batch = cmid_corpus.heldout_batches["zh"][0]
    logits, labels = module(batch)
    selected = batch["labels"] != -100
    full = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (int(selected.sum()), cmid_corpus.vocab_size)
    torch.testing.assert_close(logits, full[selected], rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, batch["labels"][selected])
    expected = float((full[selected].argmax(-1) == labels).float().mean())
    assert masked_token_accuracy(module.model, [batch]) == pytest.approx(expected)


def test_unigram_baseline_is_the_share_of_the_languages_most_frequent_token(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    the = tokenizer.convert_tokens_to_ids("the")  # 3 of the 14 tokens of every English text
    comma = tokenizer.convert_tokens_to_ids("，")  # CMID's most frequent character (13,220 of them)
    other = tokenizer.cls_token_id  # special: never the baseline's guess
    batches = [{"labels": torch.tensor([[comma, -100, the], [other, other, -100]])}]
    assert cmid_corpus.unigram_baseline_accuracy("en", batches) == pytest.approx(1 / 4)
    assert cmid_corpus.unigram_baseline_accuracy("zh", batches) == pytest.approx(1 / 4)
    assert cmid_corpus.unigram_baseline_accuracy("zh", [{"labels": torch.tensor([[the, the]])}]) == 0.0


class ShareRecorder(pl.Callback):
    """What one process trained on (each block's tokens), its sampler, the validation metrics it
    logged and the tokens it counted, written to ``<folder>/rank<N>.json`` (the two-process test reads them)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.blocks: list[list[int]] = []
        self.validations: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        original = torch.where(batch["labels"] == -100, batch["input_ids"], batch["labels"])  # before masking
        self.blocks += [row[mask].tolist() for row, mask in zip(original, batch["attention_mask"].bool())]

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.validations.append({key: float(metrics[key]) for key in ("val/mlm_loss", "val/mlm_acc", "tokens_seen")})

    def on_train_end(self, trainer, pl_module) -> None:
        sampler = trainer.train_dataloader.sampler
        record = {"sampler": type(sampler).__name__, "replicas": sampler.num_replicas, "blocks": self.blocks,
                  "validations": self.validations, "tokens_seen": pl_module.tokens_seen}
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


CHINESE = [f"头痛{n}天了，吃什么药比较好？发烧{n % 7}度怎么办" for n in range(400)]


@pytest.mark.slow
def test_pretraining_on_two_processes_shares_the_blocks_and_validates_as_one_process(tmp_path):
    texts, out = tmp_path / "texts", tmp_path / "backbone"
    texts.mkdir()
    (texts / "en.txt").write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    (texts / "zh.txt").write_text("\n".join(CHINESE) + "\n", encoding="utf-8")
    config = yaml.safe_load((ROOT / "examples" / "pretrain" / "default.yaml").read_text())
    config["data"]["init_args"].update(tasks=[], data_root=None, text_files=[str(texts)], vocab_size=300, max_length=32,
                                       batch_size=4, heldout_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    config["model"]["init_args"].update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config["trainer"].update(max_steps=4, val_check_interval=2, precision="32-true", default_root_dir=str(tmp_path),
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[
                                 {"class_path": "lt_tuning.MaskedLMExport", "init_args": {"output_dir": str(out)}},
                                 {"class_path": "test_pretraining.ShareRecorder", "init_args": {"folder": str(tmp_path)}}])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    tests = str(ROOT / "tests")  # ShareRecorder's module
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), tests]))}
    script = Path(sys.executable).with_name("lt-tuning")
    result = subprocess.run([str(script), "fit", "--config", str(tmp_path / "config.yaml"), "--trainer.devices", "2",
                             "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-4000:]
    assert "sync_dist=True" not in result.stderr  # the validation metrics are reduced across processes already

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(rank["sampler"], rank["replicas"]) for rank in ranks] == [("BlockSampler", 2)] * 2
    shares = [{tuple(block) for block in rank["blocks"]} for rank in ranks]
    assert len(shares[0]) == len(shares[1]) == 16 and not shares[0] & shares[1]  # 4 steps of 4 blocks, different ones
    report = json.loads((out / "pretraining_report.json").read_text())
    tokens = sum(len(block) for rank in ranks for block in rank["blocks"])
    assert report["steps"] == 4 and report["tokens_seen"] == ranks[0]["tokens_seen"] == ranks[1]["tokens_seen"] == tokens

    # One process evaluating the exported weights on the same held-out batches: the same figures.
    corpus = MaskedLMCorpusDataModule(**config["data"]["init_args"])
    corpus.setup("validate")
    model = load_masked_lm(str(out)).eval()
    for language_, batches in corpus.heldout_batches.items():
        assert report[f"heldout_mlm_acc_{language_}"] == masked_token_accuracy(model, batches)
    batches = [batch for group in corpus.heldout_batches.values() for batch in group]
    accuracy = masked_token_accuracy(model, batches)
    [logged] = [validation for validation in ranks[0]["validations"] if validation["tokens_seen"] == tokens]
    assert logged["val/mlm_acc"] == pytest.approx(accuracy, abs=1e-6) and ranks[1]["validations"] == ranks[0]["validations"]
    losses = [F.cross_entropy(*masked_logits(model, batch), reduction="sum") for batch in batches]
    masked = sum(int((batch["labels"] != -100).sum()) for batch in batches)
    assert logged["val/mlm_loss"] == pytest.approx(float(sum(losses)) / masked, rel=1e-5)


@pytest.mark.skipif(not (BACKBONE / "model.safetensors").is_file(), reason="examples/backbone not built yet")
def test_domain_config_continues_the_committed_backbone_on_a_folder_of_text_files(tmp_path, monkeypatch):
    texts, out = tmp_path / "texts", tmp_path / "adapted"
    (texts / "news").mkdir(parents=True)
    (texts / "news" / "en.txt").write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    (texts / "zh.txt").write_text("\n".join(CHINESE) + "\n", encoding="utf-8")
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the repository root
    args = ["--config", str(ROOT / "examples" / "pretrain" / "domain.yaml"), f"--data.init_args.text_files=[{texts}]",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.batch_size=4",
            "--data.init_args.max_length=32", "--data.init_args.heldout_fraction=0.1", "--trainer.max_steps=2",
            "--trainer.val_check_interval=2", "--trainer.precision=32-true", f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.callbacks.init_args.output_dir={out}", "--trainer.enable_progress_bar=false"]
    backbone = load_masked_lm(str(BACKBONE)).state_dict()
    start = build_cli(args, run=False).model.model.state_dict()
    assert start.keys() == backbone.keys() and all(torch.equal(start[key], backbone[key]) for key in backbone)
    build_cli(["fit", *args])
    report = json.loads((out / "pretraining_report.json").read_text())
    assert report["steps"] == 2 and [Path(source["file"]).name for source in report["corpus"]] == ["en.txt", "zh.txt"]
    assert {"heldout_mlm_acc_zh", "heldout_mlm_acc_en"} <= set(report)
    assert (out / "tokenizer.json").read_bytes() == (BACKBONE / "tokenizer.json").read_bytes()
    adapted = load_masked_lm(str(out)).state_dict()
    assert not torch.equal(adapted["bert.embeddings.word_embeddings.weight"], backbone["bert.embeddings.word_embeddings.weight"])


@pytest.mark.slow
def test_pretrain_through_cli_exports_budgets_then_reload_and_tune(tmp_path):
    require_split("cmid", "train")
    out, budgets = tmp_path / "backbone", tmp_path / "budgets"
    cli = build_cli([
        "fit", "--config", str(ROOT / "examples" / "pretrain" / "default.yaml"),
        "--data.init_args.tasks", "[cmid]", "--data.init_args.data_root", str(SHARED_DATA),
        "--data.init_args.vocab_size", "3000", "--data.init_args.max_length", "32",
        "--data.init_args.batch_size", "8", "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--model.init_args.hidden_size", "32", "--model.init_args.num_hidden_layers", "1",
        "--model.init_args.num_attention_heads", "2", "--model.init_args.intermediate_size", "64",
        "--trainer.callbacks.init_args.output_dir", str(out),
        "--trainer.callbacks.init_args.budgets_dir", str(budgets),
        "--trainer.callbacks.init_args.token_budgets", "[0, 300]",
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ])
    report = json.loads((out / "pretraining_report.json").read_text())
    assert report["steps"] == 4 and report["tokens_seen"] == cli.model.tokens_seen > 4 * 8 * 16
    assert 0 < report["heldout_unigram_baseline_acc_zh"] < 1 and "heldout_mlm_acc_en" not in report
    initial = json.loads((budgets / "0" / "pretraining_report.json").read_text())
    middle = json.loads((budgets / "300" / "pretraining_report.json").read_text())
    assert (initial["steps"], initial["tokens_seen"]) == (0, 0)
    assert middle["steps"] == 2 and 300 <= middle["tokens_seen"] < report["tokens_seen"]  # 256 tokens a step
    assert sorted(path.name for path in budgets.iterdir()) == ["0", "300"]

    # Stored in float16, loaded by lt-tuning in float32, logits as the float32 model's; BERT's dropout for tuning.
    with safe_open(out / "model.safetensors", "pt") as stored:
        assert {stored.get_tensor(key).dtype for key in stored.keys()} == {torch.float16}
    saved = load_masked_lm(str(out)).eval()
    assert {p.dtype for p in saved.parameters()} == {torch.float32}
    assert saved.config.hidden_dropout_prob == 0.1 and cli.model.model.config.hidden_dropout_prob == 0.0
    batches = cli.datamodule.heldout_batches["zh"]
    expected, _ = masked_logits(cli.model.model.eval(), batches[0])
    torch.testing.assert_close(masked_logits(saved, batches[0])[0], expected, rtol=2e-3, atol=2e-3)
    assert report["heldout_mlm_acc_zh"] == masked_token_accuracy(saved, batches)

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    encoder = load_encoder(str(out))
    assert encoder.config.hidden_size == 32 and getattr(encoder, "pooler", None) is None

    data = CMIDDataModule(data_dir=str(SHARED_DATA / "cmid"), model_name_or_path=str(out),
                          limit_examples=16, batch_size=8, cache_dir=str(tmp_path / "tok"))
    for module in (PromptTuningModule(str(out), data.num_classes, verbalizer=data.verbalizer),
                   ClsTuningModule(str(out), data.num_classes, layer_norm="pretrained")):
        data.input_format = module.input_format
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        logits = module(batch)
        assert logits.shape == (8, data.num_classes) and torch.isfinite(logits).all()
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        loss.backward()
        embeddings = next(p for name, p in module.named_parameters() if "word_embeddings" in name)
        assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def committed_corpus(tmp_path_factory) -> MaskedLMCorpusDataModule:
    """The committed backbone's pretraining corpus: the data settings of its run (batch size included), its tokenizer."""
    if not (BACKBONE / "model.safetensors").is_file():
        pytest.skip("examples/backbone not built yet")
    for task in ("cmid", "ctc", "r52"):
        require_split(task, "train")
    settings = yaml.safe_load((ROOT / "examples" / "pretrain" / "default.yaml").read_text())["data"]["init_args"]
    corpus = MaskedLMCorpusDataModule(**{**settings, "data_root": str(SHARED_DATA), "tokenizer": str(BACKBONE),
                                         "cache_dir": str(tmp_path_factory.mktemp("committed"))})
    corpus.setup("validate")
    return corpus


def in_memory_definition(corpus: MaskedLMCorpusDataModule) -> tuple[dict[str, list[str]], dict[str, Counter]]:
    """The splits (``train``, ``heldout_<language>``) and the train token counts by language as
    the corpus defined them when it held every text in a Python list (before issue 24)."""
    texts = []
    for task in corpus.tasks:
        path = Path(corpus.data_root) / task / "train.tsv"
        if path.is_file():
            columns = read_labelled_file(path, TASKS[task].text_fields, label_field=None, label2idx=None)
            texts += [text for field in ("text_a", "text_b") for text in columns.get(field, [])]
    for name in corpus.text_files:
        texts += [line for line in read_text(name).split("\n") if line.strip()]
    order = np.random.default_rng(corpus.seed).permutation(len(texts))
    n_heldout = max(1, int(round(corpus.heldout_fraction * len(texts))))
    splits = {"train": [texts[i] for i in sorted(order[n_heldout:])]}
    for i in sorted(order[:n_heldout]):
        splits.setdefault(f"heldout_{language(texts[i])}", []).append(texts[i])
    counts: dict[str, Counter] = {}
    for text, ids in zip(splits["train"], corpus.tokenizer(splits["train"], add_special_tokens=False)["input_ids"]):
        counts.setdefault(language(text), Counter()).update(ids)
    return splits, counts


def test_corpus_splits_blocks_and_token_counts_are_the_in_memory_definitions(cmid_corpus):
    """On CMID and a text file (the committed corpus's own held-out batches are checked against
    the backbone's card below)."""
    corpus = cmid_corpus
    splits, counts = in_memory_definition(corpus)
    assert corpus.heldout_texts == {name.removeprefix("heldout_"): texts
                                   for name, texts in splits.items() if name != "train"}
    assert list(corpus.train_texts["text"]) == splits["train"]
    tokenizer, body = corpus.tokenizer, corpus.max_length - 1
    for language_, texts in corpus.heldout_texts.items():  # packed 1,000 texts at a time, as before
        expected = []
        for start in range(0, len(texts), 1000):
            stream = [token for ids in tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]
                      for token in ids + [tokenizer.sep_token_id]]
            expected += [[tokenizer.cls_token_id] + stream[i : i + body] for i in range(0, len(stream), body)
                         if len(stream[i : i + body]) > 1]
        assert list(corpus.encode(f"heldout_{language_}")["input_ids"]) == expected
    for language_, counter in counts.items():
        new = corpus._train_token_counts[language_]
        assert {token: int(count) for token, count in enumerate(new) if count} == dict(counter)
        assert int(new.argmax()) == counter.most_common(1)[0][0]  # the unigram baseline's guess


def test_committed_backbone_reaches_15_percent_in_each_language(committed_corpus):
    assert (BACKBONE / "model.safetensors").stat().st_size <= 25 * 2**20
    model, info = AutoModelForMaskedLM.from_pretrained(BACKBONE, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    model = load_masked_lm(str(BACKBONE)).eval()
    report = json.loads((BACKBONE / "pretraining_report.json").read_text())
    for language_ in ("zh", "en"):
        batches = committed_corpus.heldout_batches[language_]
        assert sum(int((batch["labels"] != -100).sum()) for batch in batches) > 1000
        accuracy = masked_token_accuracy(model, batches)
        baseline = committed_corpus.unigram_baseline_accuracy(language_, batches)
        assert report[f"heldout_mlm_acc_{language_}"] == pytest.approx(accuracy, abs=1e-6)  # the card's figure
        assert report[f"heldout_unigram_baseline_acc_{language_}"] == pytest.approx(baseline, abs=1e-6)
        assert accuracy >= 0.15 and accuracy > baseline + 0.05, (language_, accuracy, baseline)


@pytest.mark.skipif(not BUDGETS.is_dir(), reason="no budget checkpoints committed")
def test_budget_checkpoints_share_the_tokenizer_and_grow_in_tokens():
    folders = sorted(BUDGETS.iterdir(), key=lambda folder: int(folder.name))
    assert [folder.name for folder in folders][:1] == ["0"] and len(folders) >= 4
    reports = [json.loads((folder / "pretraining_report.json").read_text()) for folder in folders]
    assert all(report["tokens_seen"] >= int(folder.name) for report, folder in zip(reports, folders))
    assert reports[0]["tokens_seen"] == 0 and all(a["tokens_seen"] < b["tokens_seen"] for a, b in zip(reports, reports[1:]))
    for folder in folders:
        assert (folder / "tokenizer.json").read_bytes() == (BACKBONE / "tokenizer.json").read_bytes()
        model, info = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
        assert not info["missing_keys"] and model.config.vocab_size == len(AutoTokenizer.from_pretrained(BACKBONE))


def test_pretraining_benchmark_runs_the_same_training_both_ways(tmp_path, run_script):
    pytest.importorskip("accelerate", reason="transformers' Trainer, the benchmark's baseline, needs accelerate")
    require_split("cmid", "train")
    run_script("bench_pretraining.py", "--tasks", "cmid", "--steps", "5", "--repeats", "1", "--batch-size", "4",
               "--max-length", "32", "--vocab-size", "500", "--hidden-size", "32", "--layers", "1",
               "--precision", "32-true", "--results-dir", tmp_path, "--data-dir", SHARED_DATA)
    result = json.loads((tmp_path / "pretraining.json").read_text(encoding="utf-8"))
    # In float32 both loops end with the same weights: the same batches, optimizer, schedule, clipping.
    assert result["results"]["max_abs_weight_difference_after_training"] < 1e-6
    assert result["tokens_per_step"] == 4 * 32  # full packed blocks
    ratio = result["results"]["ratio_lt_tuning_over_transformers"]["median"]
    assert f"**{ratio:.3f}**" in (tmp_path / "pretraining.md").read_text(encoding="utf-8")

