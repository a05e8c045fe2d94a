"""The ``lt-tuning`` command as a new user meets it: short budgets, evaluation without a checkpoint, own data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, require_split
from docblocks import code_block
from lt_tuning import TextClassificationDataModule
from lt_tuning.cli import COMMANDS, main
from lt_tuning.commands.lightning import build_cli


def tiny_cmid_args(tmp_path: Path, model_dir: str) -> list[str]:
    """The tiny prompt model on 48 CMID examples (6 batches of 8 per epoch), evaluated every 100 steps;
    logged to ``metrics.csv`` whichever logger is the default."""
    return [
        "--data=lt_tuning.CMIDDataModule", f"--data.data_dir={SHARED_DATA}", f"--data.model_name_or_path={model_dir}",
        "--data.limit_examples=48", "--data.batch_size=8", f"--data.cache_dir={tmp_path / 'cache'}",
        "--model=lt_tuning.PromptTuningModule", "--model.learning_rate=0.001",
        "--trainer.val_check_interval=100", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--plots.enabled=false",  # the plots have their tests (test_plots.py); here they would only cost time
    ]


def logged_steps(log_dir: str, metric: str) -> list[int]:
    with open(Path(log_dir) / "metrics.csv", encoding="utf-8") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get(metric)]


@pytest.mark.parametrize(("budget", "steps"), [("--trainer.max_steps=3", 3), ("--trainer.max_epochs=1", 6)])
def test_a_budget_shorter_than_one_evaluation_interval_tests_its_best_checkpoint(budget, steps, tmp_path,
                                                                                 tiny_bert_dir):
    require_split("cmid", "train")
    cli = build_cli(["fit", *tiny_cmid_args(tmp_path, tiny_bert_dir), budget])
    best = cli.trainer.checkpoint_callback.best_model_path
    assert Path(best).name == f"best-step={steps}.ckpt"  # validated once, at the last step
    assert logged_steps(cli.trainer.log_dir, "val/f1") == [steps - 1]  # Lightning logs a step's metrics at step - 1
    assert cli.trainer.ckpt_path == best  # and the test after fit loaded it
    assert (Path(cli.trainer.log_dir) / "test_metrics.json").is_file()


def test_fit_logs_the_training_loss_every_10_steps(tmp_path, tiny_bert_dir):
    require_split("cmid", "train")
    cli = build_cli(["fit", *tiny_cmid_args(tmp_path, tiny_bert_dir), "--trainer.max_steps=20"])
    assert logged_steps(cli.trainer.log_dir, "train/loss") == [9, 19]  # a curve of a short run, not one point


def test_fit_without_validation_tests_the_final_weights_and_says_so(tmp_path, tiny_bert_dir):
    require_split("cmid", "train")
    args = ["fit", *tiny_cmid_args(tmp_path, tiny_bert_dir), "--trainer.max_steps=2", "--trainer.limit_val_batches=0"]
    with pytest.warns(UserWarning, match="No best checkpoint was saved .*TESTING THE FINAL WEIGHTS"):
        cli = build_cli(args)
    assert cli.trainer.ckpt_path is None and cli.trainer.global_step == 2
    assert (Path(cli.trainer.log_dir) / "test_metrics.json").is_file()


def own_cmid_args(tmp_path: Path, model_dir: str) -> list[str]:
    """CMID's train and test files as own data, with no dev split: 48 examples, 6 batches of 8."""
    cmid = SHARED_DATA / "cmid"
    return [
        "--data=lt_tuning.TextClassificationDataModule", f"--data.model_name_or_path={model_dir}",
        f"--data.train_file={cmid / 'train.tsv'}", f"--data.test_file={cmid / 'test.tsv'}",
        f"--data.labels={cmid / 'label2idx.json'}", f"--data.verbalizer={cmid / 'verbalizer.json'}",
        "--data.template={cls}{text_a}？这个问题的意图是{mask}。{sep}", "--data.limit_examples=48", "--data.batch_size=8",
        f"--data.cache_dir={tmp_path / 'cache'}", "--model=lt_tuning.PromptTuningModule",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--plots.enabled=false",
    ]


@pytest.mark.parametrize("evaluations", [[], ["--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=1"]],
                         ids=["every 100 steps", "every epoch"])
def test_fit_without_a_dev_split_trains_without_validation_and_tests_the_final_weights(evaluations, tmp_path,
                                                                                      tiny_bert_dir):
    require_split("cmid", "train")
    with pytest.warns(UserWarning) as caught:
        cli = build_cli(["fit", *own_cmid_args(tmp_path, tiny_bert_dir), "--trainer.max_epochs=1", *evaluations])
    messages = [str(warning.message) for warning in caught]
    assert any(message.startswith("No dev split: fit trains with no validation") for message in messages)
    assert any("TESTING THE FINAL WEIGHTS" in message for message in messages)
    assert cli.trainer.global_step == 6 and cli.trainer.ckpt_path is None  # a whole epoch, no early stop, no best
    assert (Path(cli.trainer.log_dir) / "test_metrics.json").is_file()


def test_a_config_may_give_labels_and_verbalizer_keys_as_integers(tmp_path, tiny_bert_dir):
    require_split("cmid", "train")
    config = tmp_path / "labels.yaml"
    config.write_text("data:\n  init_args:\n    labels: [0, 1]\n    verbalizer: {0: 治疗, 1: 定义}\n", "utf-8")
    rows = "".join(f"{text}\t{i % 2}\n" for i, text in enumerate(["头痛怎么办", "发烧怎么办", "感冒"]))
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + rows, "utf-8")
    args = [*own_cmid_args(tmp_path, tiny_bert_dir), f"--data.train_file={tmp_path / 'train.tsv'}", "--config",
            str(config)]
    dm = build_cli(args, run=False).datamodule
    assert dm.label_names == ["0", "1"] and dm.class_counts("train") == [2, 1]
    assert dm.verbalizer.token_ids.tolist() == dm.tokenizer(["治疗", "定义"], add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_without_a_checkpoint_is_refused(subcommand, tmp_path, tiny_bert_dir):
    with pytest.raises(SystemExit, match=rf"^error: `lt-tuning {subcommand}` without --ckpt_path would use an untrained"):
        main([subcommand, *tiny_cmid_args(tmp_path, tiny_bert_dir)])


def test_own_data_example_from_readme_trains_and_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the example's relative paths are from the repository root
    command = code_block("README.md", "examples/own_data/config.yaml").split()
    assert command[:2] == ["lt-tuning", "fit"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*have no (training|dev) example")  # every class in every split
        cli = build_cli([*command[1:], "--trainer.max_steps=4",
                         f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    dm = cli.datamodule
    assert isinstance(dm, TextClassificationDataModule)
    assert [dm.class_counts(split) for split in ("train", "dev", "test")] == [[20, 10, 5, 2], [4, 3, 2, 2], [4, 4, 2, 2]]
    assert dm.head_tail_classes("train") == ([0], [1, 2, 3])  # billing is 20/37 = 54% < 65%, +delivery 81%
    assert dm.examples["train"]["text_a"][17] == "账单金额不对,请核实"  # a quoted CSV field with a comma
    result = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text(encoding="utf-8"))
    assert len(result["test/per_class_f1"]) == 4


def test_readme_python_example_gives_the_cli_numbers(tmp_path, monkeypatch, tiny_bert_dir):
    """README's Python example (the CLI's recipe in one call) and `lt-tuning fit` with the same
    configs and seed: the same test metrics. Both shortened the same way: 24 rows, 3 steps, the tiny
    model in place of examples/backbone."""
    require_split("cmid", "train")
    monkeypatch.chdir(ROOT)  # the example's relative paths are from the repository root
    example = code_block("README.md", "fit_and_test")
    short = {"group_by_length=True,": f"group_by_length=True, limit_examples=24, cache_dir={str(tmp_path)!r},",
             '"../shared/data"': repr(str(SHARED_DATA)), '"examples/backbone"': repr(tiny_bert_dir),
             "max_steps=500)": f"max_steps=3, val_check_interval=2, default_root_dir={str(tmp_path / 'py')!r}, "
                               "enable_progress_bar=False)"}
    for old, new in short.items():
        assert old in example
        example = example.replace(old, new)
    namespace: dict = {}
    exec(example, namespace)
    cli = build_cli(["fit", "--config", "examples/data/cmid.yaml", "--config", "examples/methods/prompt_tuning.yaml",
                     "--config", "examples/own_backbone.yaml", f"--data.init_args.data_dir={SHARED_DATA}",
                     f"--data.init_args.model_name_or_path={tiny_bert_dir}",
                     "--data.init_args.limit_examples=24", f"--data.init_args.cache_dir={tmp_path}",
                     "--trainer.max_steps=3", "--trainer.val_check_interval=2",
                     f"--trainer.default_root_dir={tmp_path / 'cli'}", "--trainer.enable_progress_bar=false",
                     "--plots.enabled=false"])
    assert cli.model.last_test_metrics == namespace["metrics"]
    assert 0 < namespace["metrics"]["test/acc"] < 1


def test_lt_tuning_help_lists_every_command_and_loads_no_training_stack(tmp_path):
    """The installed script in a fresh process: one line per command; neither it nor ``import lt_tuning``
    loads torch, Lightning, transformers, matplotlib or datasets (a command loads what it uses)."""
    script = Path(sys.executable).with_name("lt-tuning")
    listed = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in lines] == list(COMMANDS)
    assert all(summary in line for line, (_, summary) in zip(lines, COMMANDS.values()))
    heavy = ("torch", "pytorch_lightning", "transformers", "matplotlib", "datasets")
    probe = f"import sys, lt_tuning, lt_tuning.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stderr
    # an input error: one line naming the problem, status 2, no traceback
    failed = subprocess.run([str(script), "export", "--ckpt_path", "missing.ckpt", "--output_dir", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("error: --ckpt_path missing.ckpt: no such file")
    assert len(failed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert f" {command} " in capsys.readouterr().out.splitlines()[0] + " "  # its own usage line
