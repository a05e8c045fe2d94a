"""Own backbone: WordPiece vocabulary, corpus packing and masking, masked-LM pretraining, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, SHARED_DATA, require_split
from safetensors import safe_open
from transformers import AutoModelForMaskedLM, AutoTokenizer

from lt_tuning import (
    CMIDDataModule,
    ClsTuningModule,
    MaskedLMCorpusDataModule,
    MaskedLMPretrainingModule,
    PromptTuningModule,
)
from lt_tuning.cli import build_cli
from lt_tuning.data import read_labelled_file, train_wordpiece_tokenizer
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
    splits = cmid_corpus.split_texts
    assert sorted(splits) == ["heldout_en", "heldout_zh", "train"] and cmid_corpus.languages == ["zh", "en"]
    assert len(splits["heldout_zh"]) + len(splits["heldout_en"]) == round(0.05 * (8578 + 180))
    assert set(splits["heldout_en"]) <= set(ENGLISH) and 0 < len(splits["heldout_en"]) < 180
    cmid = read_labelled_file(SHARED_DATA / "cmid" / "train.tsv", ["text"], None, None)["text_a"]
    assert sorted(splits["train"] + splits["heldout_zh"] + splits["heldout_en"]) == sorted(cmid + ENGLISH)
    assert set(cmid_corpus.heldout_batches) == {"zh", "en"}


def test_corpus_vocabulary_covers_template_and_verbalizer(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    verbalizer = json.loads((SHARED_DATA / "cmid" / "verbalizer.json").read_text(encoding="utf-8"))
    for word in [*verbalizer.values(), "这个问题的意图是"]:
        assert tokenizer.unk_token_id not in tokenizer(word, add_special_tokens=False)["input_ids"], word


def test_packing_keeps_every_token_in_order(cmid_corpus):
    tokenizer = cmid_corpus.tokenizer
    blocks = cmid_corpus.encode("heldout_zh")["input_ids"]
    assert all(block[0] == tokenizer.cls_token_id and len(block) <= 32 for block in blocks)
    stream = [token for text in cmid_corpus.split_texts["heldout_zh"]
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


@pytest.mark.skipif(not (BACKBONE / "model.safetensors").is_file(), reason="examples/backbone not built yet")
def test_committed_backbone_reaches_15_percent_in_each_language(tmp_path):
    for task in ("cmid", "ctc", "r52"):
        require_split(task, "train")
    assert (BACKBONE / "model.safetensors").stat().st_size <= 25 * 2**20
    model, info = AutoModelForMaskedLM.from_pretrained(BACKBONE, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    model = load_masked_lm(str(BACKBONE)).eval()
    # The pretraining run's held-out texts and masks: its data settings (batch size included), its tokenizer.
    settings = yaml.safe_load((ROOT / "examples" / "pretrain" / "default.yaml").read_text())["data"]["init_args"]
    corpus = MaskedLMCorpusDataModule(**{**settings, "data_root": str(SHARED_DATA), "tokenizer": str(BACKBONE),
                                         "cache_dir": str(tmp_path)})
    corpus.setup("validate")
    report = json.loads((BACKBONE / "pretraining_report.json").read_text())
    for language in ("zh", "en"):
        batches = corpus.heldout_batches[language]
        assert sum(int((batch["labels"] != -100).sum()) for batch in batches) > 1000
        accuracy = masked_token_accuracy(model, batches)
        baseline = corpus.unigram_baseline_accuracy(language, batches)
        assert report[f"heldout_mlm_acc_{language}"] == pytest.approx(accuracy, abs=1e-6)  # the card's figure
        assert report[f"heldout_unigram_baseline_acc_{language}"] == pytest.approx(baseline, abs=1e-6)
        assert accuracy >= 0.15 and accuracy > baseline + 0.05, (language, accuracy, baseline)


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
