"""Reliability: clear errors before training, resume after a kill, determinism, DDP parity, atomic files."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model

from conftest import SHARED_DATA, require_split
from lt_tuning import ClsTuningModule, CMIDDataModule, MaskedLMCorpusDataModule, PromptTuningModule
from lt_tuning.cli import main
from lt_tuning.commands.lightning import build_cli
from lt_tuning.data import DataFileError, read_labelled_file
from lt_tuning.data.labels import load_label_names
from lt_tuning.io import AtomicCheckpointIO, atomic_open, atomic_write_json
from lt_tuning.metrics import head_tail_split

LABELS = ["治疗", "定义", "表现"]  # each its own verbalizer word; all in the test vocabulary
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def cmid_texts(count: int) -> list[str]:
    lines = (SHARED_DATA / "cmid" / "dev.tsv").read_text("utf-8").split("\n")[1 : count + 1]
    return [line.split("\t")[0] for line in lines]


def tsv(rows: list[tuple[str, str]]) -> str:
    return "text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)


def make_task(folder: Path, train_labels: list[str] = LABELS, **files: str | bytes | None) -> Path:
    """A released-task folder (splits, label2idx.json, verbalizer.json); ``files`` replace or delete files."""
    texts = cmid_texts(24)
    contents: dict[str, str | bytes | None] = {
        "train.tsv": tsv([(text, train_labels[i % len(train_labels)]) for i, text in enumerate(texts)]),
        "dev.tsv": tsv([(text, LABELS[i % 3]) for i, text in enumerate(texts[:12])]),
        "test.tsv": tsv([(text, LABELS[(i + 1) % 3]) for i, text in enumerate(texts[:12])]),
        "label2idx.json": json.dumps({label: i for i, label in enumerate(LABELS)}, ensure_ascii=False),
        "verbalizer.json": json.dumps({label: label for label in LABELS}, ensure_ascii=False),
    }
    contents.update({name.replace("_", "."): value for name, value in files.items()})
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in contents.items():
        if value is not None:
            (folder / name).write_bytes(value if isinstance(value, bytes) else value.encode("utf-8"))
    return folder


class CountBatches(pl.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1


def assert_fails_before_training(dm: CMIDDataModule, model_dir: str, error: type, match: str) -> None:
    """Building the prompt-tuning module from ``dm`` or ``fit`` raises ``error`` matching ``match``
    before the first training batch."""
    counter = CountBatches()
    trainer = pl.Trainer(max_steps=2, callbacks=[counter], **QUIET)
    with pytest.raises(error, match=match):
        trainer.fit(PromptTuningModule(model_dir, num_classes=dm.num_classes, verbalizer=dm.verbalizer), dm)
    assert counter.batches == 0 and trainer.global_step == 0


# --- bad input: a clear error naming file, row and fix, before any training -------------

BAD_FILES = {
    "dev label not in the label list": (
        {"dev_tsv": tsv([("头痛", "治疗"), ("头痛", "手术")])}, DataFileError,
        r"dev\.tsv, row 3: unknown label '手术'\. .*Fix the row or add the label to the label list",
    ),
    "test label not in the label list": (
        {"test_tsv": tsv([("头痛", "治疗"), ("头痛", "定义"), ("头痛", "手术")])}, DataFileError,
        r"test\.tsv, row 4: unknown label '手术'",
    ),
    "label missing from the verbalizer": (
        {"verbalizer_json": json.dumps({"治疗": "治疗", "定义": "定义"}, ensure_ascii=False)}, ValueError,
        r"verbalizer\.json: no verbalizer word for label\(s\) \['表现'\]; add an entry",
    ),
    "verbalizer word that tokenizes to [UNK]": (
        {"verbalizer_json": json.dumps({"治疗": "治疗", "定义": "☃", "表现": "表现"}, ensure_ascii=False)},
        ValueError, r"verbalizer\.json: the verbalizer word '☃' of label '定义' tokenizes to \['\[UNK\]'\]; choose",
    ),
    "row with the wrong number of fields": (
        {"dev_tsv": "text\tlabel\n头痛\t治疗\n头痛\t治疗\textra\n"}, DataFileError,
        r"dev\.tsv, line 3: 3 field\(s\) where the header .* Check for a stray or missing separator",
    ),
    "empty text field": (
        {"train_tsv": tsv([("头痛", "治疗"), (" ", "定义")])}, DataFileError,
        r"train\.tsv, row 3: empty text in column 'text'; fill it in or delete the row",
    ),
    "misspelled header column": (
        {"test_tsv": "txet\tlabel\n头痛\t治疗\n"}, DataFileError,
        r"test\.tsv, line 1 \(the header\): no column 'text'; the header has \['txet', 'label'\]\. Fix the header",
    ),
    "label2idx.json with a gap in the indices": (
        {"label2idx_json": json.dumps({"治疗": 0, "定义": 1, "表现": 3}, ensure_ascii=False)}, DataFileError,
        r"label2idx\.json: label indices must be 0\.\.2, each once \(missing: \[2\], out of range: \[3\]\)",
    ),
    "split file with a header only": (
        {"dev_tsv": "text\tlabel\n"}, DataFileError, r"dev\.tsv: no examples .*add rows",
    ),
    "empty split file": ({"test_tsv": ""}, DataFileError, r"test\.tsv: no examples"),
    "missing split file": (
        {"dev_tsv": None}, FileNotFoundError, r"dev split file is missing: .*dev\.tsv\. Put the file there",
    ),
    "non-UTF-8 split file": (
        {"train_tsv": "text\tlabel\n头痛\t治疗\n".encode() + "发烧\t治疗\n".encode("gb18030")}, DataFileError,
        r"train\.tsv, line 3: not UTF-8 .*re-save the file as UTF-8",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_files_fail_before_training_naming_file_and_fix(case, tmp_path, tiny_bert_dir):
    files, error, match = BAD_FILES[case]
    task = make_task(tmp_path / "cmid", **files)
    dm = CMIDDataModule(data_dir=str(task), model_name_or_path=tiny_bert_dir, input_format="prompt",
                        cache_dir=str(tmp_path / "cache"))
    assert_fails_before_training(dm, tiny_bert_dir, error, match)


BAD_SETTINGS = {
    "template without {mask}": (dict(template="{cls}{text_a}{sep}"), r"must contain \{mask\} exactly once"),
    "template without {text_a}": (dict(template="{cls}这是{mask}{sep}"), r"must contain \{text_a\} exactly once"),
    "{text_b} on a one-field dataset": (
        dict(template="{cls}{text_a}{text_b}是{mask}{sep}"), r"uses \{text_b\} but the dataset has one text field",
    ),
    "unknown placeholder": (dict(template="{cls}{text_a}{oops}{mask}{sep}"), r"unknown placeholder \{oops\}"),
    "max_length below template + 1 token": (dict(max_length=13), r"max_length=13 is too small .* max_length >= 14"),
}


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=list(BAD_SETTINGS))
def test_bad_settings_fail_before_training(case, tmp_path, tiny_bert_dir):
    settings, match = BAD_SETTINGS[case]
    task = make_task(tmp_path / "cmid")
    dm = CMIDDataModule(data_dir=str(task), model_name_or_path=tiny_bert_dir, input_format="prompt",
                        cache_dir=str(tmp_path / "c"), **settings)
    assert_fails_before_training(dm, tiny_bert_dir, ValueError, match)


def test_a_stray_csv_quote_is_reported_on_its_own_line(tmp_path):
    rows = [f"{text},治疗" for text in cmid_texts(6)]
    rows[2] = '"' + rows[2]  # line 4: a quote opens a field that the next rows run into
    for tail, detail in (([], "unexpected end of data"), (['"头痛",治疗'], "',' expected after '\"'")):
        path = tmp_path / "train.csv"
        path.write_text("\n".join(["text,label", *rows, *tail]) + "\n", encoding="utf-8")
        with pytest.raises(DataFileError, match=rf'train\.csv, line 4: a stray quote \("\) in this row \({detail}, '
                                                rf'the row runs on to line {7 + len(tail)}\)\. Remove the quote'):
            read_labelled_file(path, ["text"], "label", {"治疗": 0})


def test_json_lines_errors_say_what_is_wrong_where(tmp_path):
    path = tmp_path / "train.jsonl"
    cases = {  # the second line -> the error
        '{"text": "头\t痛", "label": "治疗"}': r"train\.jsonl, line 2, column 12: not valid JSON \(Invalid control "
                                              r"character at column 12; a tab or line break inside a string is "
                                              r"written \\t or \\n\)\.",
        '{"text": null, "label": "治疗"}': r"train\.jsonl, row 2: the value of column\(s\) \['text'\] is null \(empty\); "
                                          "fill it in or delete the row",
        '{"txt": "头痛", "label": "治疗"}': r"train\.jsonl, row 2: no column\(s\) \['text'\] \(the row has "
                                          r"\['label', 'txt'\]\)",
    }
    for line, match in cases.items():
        path.write_text('{"text": "发烧", "label": "治疗"}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(DataFileError, match=match):
            read_labelled_file(path, ["text"], "label", {"治疗": 0})


@pytest.mark.parametrize(("suffix", "content"), [
    (".tsv", "text\tlabel\n头痛\t治疗\n"), (".csv", "text,label\n头痛,治疗\n"),
    (".jsonl", '{"text": "头痛", "label": "治疗"}\n'),
])
def test_a_utf8_byte_order_mark_is_read(suffix, content, tmp_path):
    path = tmp_path / f"train{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))  # as spreadsheet tools save UTF-8
    assert read_labelled_file(path, ["text"], "label", {"治疗": 0}) == {"text_a": ["头痛"], "label": [0]}


def test_json_and_corpus_files_name_the_line_of_a_non_utf8_byte_and_skip_a_byte_order_mark(tmp_path):
    """label2idx/verbalizer JSON and pretraining text files are read as the data files are."""
    labels = tmp_path / "label2idx.json"
    labels.write_bytes(b'{"a": 0,\n' + '"发烧": 1}'.encode("gb18030"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("头痛\n".encode() + "发烧\n".encode("gb18030"))
    for path, read in ((labels, lambda: load_label_names(str(labels))),
                       (corpus, lambda: MaskedLMCorpusDataModule(text_files=[str(corpus)]).texts)):
        with pytest.raises(DataFileError, match=rf"{path.name}, line 2: not UTF-8 .*re-save the file as UTF-8"):
            read()
    labels.write_bytes(b"\xef\xbb\xbf" + '{"头痛": 0}'.encode())
    corpus.write_bytes(b"\xef\xbb\xbf" + "头痛\n发烧\n".encode())
    assert load_label_names(str(labels)) == ["头痛"]
    assert sorted(MaskedLMCorpusDataModule(text_files=[str(corpus)]).texts["text"]) == ["发烧", "头痛"]


def test_without_a_train_split_the_hint_names_only_what_works(tmp_path, tiny_bert_dir):
    task = make_task(tmp_path / "cmid", train_tsv=None)
    args = ["--data=lt_tuning.CMIDDataModule", f"--data.data_dir={task}", f"--data.model_name_or_path={tiny_bert_dir}",
            f"--data.cache_dir={tmp_path / 'cache'}", "--model=lt_tuning.PromptTuningModule",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    hint = "validate, test and predict can run with head_tail_from='eval' .*; fit cannot"
    for subcommand in ("fit", "test"):
        with pytest.raises(SystemExit, match=rf"error: .*train split file is missing: .*train\.tsv\..*{hint}"):
            main([subcommand, *args, "--data.head_tail_from=train", "--allow_untrained=true"])
    with pytest.raises(SystemExit, match=r"error: .*train split file is missing: .*train\.tsv\. Put the file there") as fit:
        main(["fit", *args, "--data.head_tail_from=eval"])  # fit trains on that split: no hint there
    assert "head_tail_from" not in str(fit.value)
    cli = build_cli(["test", *args, "--data.head_tail_from=eval", "--allow_untrained=true"])  # the hint works for test
    assert set(cli.trainer.callback_metrics) >= {"test/f1", "test/head_f1", "test/tail_f1"}


def test_missing_model_path_says_what_to_give(tmp_path):
    missing = str(tmp_path / "no-such-model")
    for build in (lambda: PromptTuningModule(missing, num_classes=3), lambda: ClsTuningModule(missing, num_classes=3)):
        with pytest.raises(OSError, match=rf"Cannot load '{missing}': give an existing local model folder"):
            build()
    dm = CMIDDataModule(data_dir=str(make_task(tmp_path / "cmid")), model_name_or_path=missing)
    with pytest.raises(OSError, match=rf"Cannot load a tokenizer from '{missing}': give an existing local folder"):
        dm.tokenizer


def test_prompt_module_refuses_a_model_without_mlm_head(tmp_path, zh_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(zh_tokenizer_dir)
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    encoder_only = tmp_path / "encoder_only"  # a BERT saved without its MLM head
    BertModel(BertConfig(vocab_size=len(tokenizer), **size)).save_pretrained(encoder_only)
    with pytest.raises(ValueError, match="holds no masked-LM head weights .* saved with its MLM head"):
        PromptTuningModule(str(encoder_only), num_classes=3)
    with pytest.raises(ValueError, match="holds no masked-LM head weights"):  # w/ pt. LN copies the head's LayerNorm
        ClsTuningModule(str(encoder_only), num_classes=3, layer_norm="pretrained")
    ClsTuningModule(str(encoder_only), num_classes=3)  # CLS-tuning needs no MLM head
    decoder = tmp_path / "gpt2"  # an architecture without any masked-LM class
    GPT2Model(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(decoder)
    with pytest.raises(ValueError, match="has no masked-LM head that AutoModelForMaskedLM knows"):
        PromptTuningModule(str(decoder), num_classes=3)


# --- classes without a training example -------------------------------------------------

def test_classes_without_training_examples_are_named_and_still_evaluated(tmp_path, tiny_bert_dir):
    task = make_task(tmp_path / "cmid", train_labels=["治疗", "定义"])  # no training example of 表现
    dm = CMIDDataModule(data_dir=str(task), model_name_or_path=tiny_bert_dir, batch_size=8, input_format="prompt",
                        cache_dir=str(tmp_path / "cache"), head_tail_from="train")
    assert dm.class_counts("train") == [12, 12, 0]
    model = PromptTuningModule(tiny_bert_dir, num_classes=3, verbalizer=dm.verbalizer, class_counts=dm.metric_class_counts)
    trainer = pl.Trainer(max_steps=2, **QUIET)
    with pytest.warns(UserWarning, match=r"^train split \(\S+/train\.tsv\): 1 class\(es\) have no training example: "
                                         r"\['表现'\]"):
        trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    result = model.last_test_metrics
    per_class = result["test/per_class_f1"]
    assert len(per_class) == 3  # 表现 has its own F1
    head, tail = head_tail_split([12, 12, 0], 0.65)
    assert 2 in tail
    assert result["test/tail_f1"] == pytest.approx(sum(per_class[c] for c in tail) / len(tail))
    assert result["test/f1"] == pytest.approx(sum(per_class) / 3)  # and counts in the macro average


def test_classes_without_a_dev_example_are_named(tmp_path, tiny_bert_dir):
    task = make_task(tmp_path / "cmid", dev_tsv=tsv([("头痛", "治疗"), ("发烧", "定义")]))  # no dev example of 表现
    dm = CMIDDataModule(data_dir=str(task), model_name_or_path=tiny_bert_dir, input_format="cls",
                        cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"^dev split \(\S+/dev\.tsv\): 1 class\(es\) have no dev example: \['表现'\]\. "
                                         "Model selection"):
        dm.setup("fit")


# --- resume after a kill, determinism -------------------------------------------------------

def write_config(tmp_path: Path, model_dir: str, module: str, **model_args: object) -> Path:
    config = tmp_path / "run.yaml"
    init_args = "".join(f"\n    {key}: {value}" for key, value in {"learning_rate": 0.001, **model_args}.items())
    config.write_text(f"""
data:
  class_path: lt_tuning.CMIDDataModule
  init_args:
    data_dir: {SHARED_DATA}
    model_name_or_path: {model_dir}
    limit_examples: 48
    batch_size: 8
    cache_dir: {tmp_path / 'cache'}
model:
  class_path: lt_tuning.{module}
  init_args:{init_args}
trainer:
  max_epochs: 2
  val_check_interval: 4
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
last_checkpoint:
  every_n_train_steps: 3
plots:
  enabled: false
""", encoding="utf-8")
    return config


@pytest.fixture
def restore_determinism():
    """``deterministic: true`` switches torch's global flag on; give other tests the setting they had."""
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


PAUSE_CALLBACK = '''
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback


class PauseAt(Callback):
    """Stop making progress at training step ``step`` (and say so), to be killed there."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(self.step))
            time.sleep(600)
'''


def run_killed_at(step: int, config: Path, root: Path, tmp_path: Path) -> None:
    """``lt-tuning fit`` in a subprocess, SIGKILLed once it reaches training step ``step``."""
    (tmp_path / "pause_at.py").write_text(PAUSE_CALLBACK)
    marker = tmp_path / "paused"
    pause = tmp_path / "pause.yaml"
    pause.write_text(f"trainer:\n  callbacks:\n    - class_path: pause_at.PauseAt\n"
                     f"      init_args: {{step: {step}, marker: {marker}}}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "lt_tuning.cli", "fit", "--config", str(config), "--config", str(pause),
               "--trainer.default_root_dir", str(root)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, f"the run ended before step {step}:\n{process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach the pause step in 300 s"
            time.sleep(0.1)
    finally:
        process.kill()  # SIGKILL: no hook of the run gets to clean up
        process.communicate()
    assert process.returncode == -9


def final_state(root: Path) -> tuple[dict, dict]:
    """The first run's last checkpoint (where the resumed run went on too) and the latest test metrics."""
    runs = sorted((root / "lightning_logs").glob("version_*"))
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return checkpoint, json.loads((runs[-1] / "test_metrics.json").read_text())


@pytest.mark.slow
def test_fit_killed_mid_epoch_resumes_to_the_same_result(tmp_path, tiny_bert_dir, restore_determinism):
    require_split("cmid", "train")
    config = write_config(tmp_path, tiny_bert_dir, "PromptTuningModule")
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "straight")])
    straight, straight_metrics = final_state(tmp_path / "straight")

    root = tmp_path / "killed"
    run_killed_at(5, config, root, tmp_path)
    killed_at = torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert killed_at["global_step"] == 3  # 6 batches per epoch: the kill came mid-epoch
    assert killed_at["CMIDDataModule"]["train_loader"]["batches"] == 3
    assert "combined_loader" not in killed_at["loops"]["fit_loop"]["state_dict"]  # saved once, by the DataModule

    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root), "--ckpt_path", "last"])
    resumed, resumed_metrics = final_state(root)
    assert resumed["global_step"] == straight["global_step"] == 12
    assert resumed_metrics == straight_metrics
    for name, weight in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weight), name


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path, tiny_bert_dir, restore_determinism):
    require_split("cmid", "train")
    config = write_config(tmp_path, tiny_bert_dir, "ClsTuningModule")
    metrics, weights = [], []
    for run, seed in enumerate((1, 1, 2)):
        cli = build_cli(["fit", "--config", str(config), "--seed_everything", str(seed), "--trainer.max_epochs", "1",
                    "--trainer.default_root_dir", str(tmp_path / f"run{run}")])
        assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        metrics.append(json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text()))
        weights.append({name: tensor.clone() for name, tensor in cli.model.state_dict().items()})
    assert metrics[0] == metrics[1]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    # Another seed is another run: its trained weights differ (a barely trained tiny model's
    # metrics may collapse to the same majority-class numbers, so they prove nothing here).
    assert any(not torch.equal(weights[0][name], weights[2][name]) for name in weights[0])


# --- atomic files -------------------------------------------------------------------------

def _write_half_and_wait(path, ready) -> None:
    with atomic_open(path) as out:
        out.write(b"half of the new conte")
        out.flush()
        ready.set()
        time.sleep(600)


def test_a_kill_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "test_metrics.json"
    atomic_write_json(target, {"test/f1": 0.5})
    before = target.read_bytes()
    context = multiprocessing.get_context("fork")  # the writer inherits the loaded modules
    ready = context.Event()
    writer = context.Process(target=_write_half_and_wait, args=(target, ready))
    writer.start()
    try:
        assert ready.wait(60)
    finally:
        writer.kill()  # SIGKILL, mid-write
        writer.join()
    assert target.read_bytes() == before
    strays = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(strays) == 1 and strays[0].startswith(".test_metrics.json.") and strays[0].endswith(".tmp")
    assert json.loads(target.read_text()) == {"test/f1": 0.5}


def test_failed_writes_keep_the_old_file_and_leave_no_temp(tmp_path):
    target = tmp_path / "predictions.tsv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as out:
            out.write(b"new, cut short")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]


class Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_checkpoints_are_written_beside_the_target_then_renamed(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)
    renames = []
    real_replace = os.replace

    def record(source, target):
        renames.append((Path(source), Path(target), torch.load(source, weights_only=False)["step"]))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", record)
    io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    (source, target, step), = renames
    assert source.parent == path.parent and source.name.startswith(".last.ckpt.") and target == path
    assert step == 2  # complete before the rename
    with pytest.raises(RuntimeError, match="cannot be saved"):
        io.save_checkpoint({"step": 3, "broken": Unsaveable()}, path)
    assert torch.load(path, weights_only=False)["step"] == 2  # the failed save left the last good one
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


# --- bf16-mixed on CPU --------------------------------------------------------------------

class Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


@pytest.mark.parametrize("module", [PromptTuningModule, ClsTuningModule], ids=lambda m: m.__name__)
def test_bf16_mixed_on_cpu_trains_without_nan(module, tmp_path, tiny_bert_dir):
    require_split("cmid", "train")
    dm = CMIDDataModule(data_dir=str(SHARED_DATA), model_name_or_path=tiny_bert_dir, limit_examples=32,
                        batch_size=8, input_format=module.input_format, cache_dir=str(tmp_path / "cache"))
    verbalizer = {"verbalizer": dm.verbalizer} if module is PromptTuningModule else {}
    model = module(tiny_bert_dir, num_classes=dm.num_classes, class_counts=dm.metric_class_counts, learning_rate=1e-3,
                   **verbalizer)
    before = [p.detach().clone() for p in model.parameters()]
    losses = Losses()
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=4, val_check_interval=4,
                         limit_val_batches=2, callbacks=[losses], **QUIET)
    trainer.fit(model, dm)
    assert len(losses.values) == 4 and all(math.isfinite(v) and v > 0 for v in losses.values)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it did train
    assert all(math.isfinite(float(trainer.callback_metrics[k])) for k in ("val/acc", "val/f1", "val/tail_f1"))
