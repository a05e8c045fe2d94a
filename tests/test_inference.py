"""Using a trained model: raw texts in, labels out, from the checkpoint alone; the CLI; export to plain transformers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT, SHARED_DATA, require_split
from lt_tuning import ClsTuningModule, CMIDDataModule, MSRADataModule, PromptTuningModule, load_classifier
from lt_tuning.cli import main
from lt_tuning.data.reading import read_texts
from lt_tuning.inference import export_classifier

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
VARIANTS = {  # name -> (DataModule, module, its arguments, backbone, transformers' Auto class of its export)
    "prompt_tuning": (CMIDDataModule, PromptTuningModule, {}, "bert", "AutoModelForMaskedLM"),
    "cls_tuning_tanh": (CMIDDataModule, ClsTuningModule, {}, "bert", "AutoModelForSequenceClassification"),
    "cls_tuning_tanh_roberta": (CMIDDataModule, ClsTuningModule, {}, "roberta", "AutoModelForSequenceClassification"),
    "cls_tuning_pt_ln": (CMIDDataModule, ClsTuningModule, {"layer_norm": "pretrained"}, "bert", None),
    "prompt_tuning_tau_norm_pairs": (MSRADataModule, PromptTuningModule, {"tau_norm": 1.0}, "bert", None),
}


def readme_block(marker: str) -> str:
    """The code block of README.md's "Use a trained model" section whose text holds ``marker``."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Use a trained model")[1].split("\n## ")[0]
    [block] = [b for b in re.findall(r"```(?:python|bash)\n(.*?)```", section, re.S) if marker in b]
    return block


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_bert_dir, tiny_roberta_dir):
    """Per variant: a checkpoint whose backbone folder no longer exists, the test texts, and the
    module's own probabilities on them (through the DataModule and ``trainer.predict``)."""
    require_split("msra", "test")
    root = tmp_path_factory.mktemp("saved")
    result = {}
    for name, (datamodule, module_class, arguments, arch, _) in VARIANTS.items():
        backbone = shutil.copytree(tiny_bert_dir if arch == "bert" else tiny_roberta_dir, root / f"backbone-{name}")
        dm = datamodule(data_dir=str(SHARED_DATA), model_name_or_path=str(backbone), limit_examples=12,
                        eval_batch_size=12, input_format=module_class.input_format, cache_dir=str(root / "cache"))
        if arguments.get("layer_norm") is None and module_class is ClsTuningModule:
            dm.input_format = "cls"
        pl.seed_everything(0)
        extra = {"verbalizer": dm.verbalizer} if module_class is PromptTuningModule else {}
        model = module_class(str(backbone), num_classes=dm.num_classes, vocab_size=dm.vocab_size, **extra, **arguments)
        trainer = pl.Trainer(limit_val_batches=1, **QUIET)
        trainer.validate(model, dm, verbose=False)
        trainer.save_checkpoint(root / f"{name}.ckpt")
        [batch] = trainer.predict(model, dm)
        examples = dm.examples["test"]
        texts = list(zip(examples["text_a"], examples["text_b"])) if "text_b" in examples else examples["text_a"]
        result[name] = {"ckpt": root / f"{name}.ckpt", "texts": texts, "labels": dm.label_names,
                        "probs": batch["probs"][batch["index"].argsort()]}
        shutil.rmtree(backbone)  # the checkpoint must not need it
    return result


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_checkpoint_alone_classifies_raw_text(variant, saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another folder; no LT_TUNING_DATA (conftest), no backbone folder
    run = saved[variant]
    classifier = load_classifier(run["ckpt"])
    assert classifier.labels == run["labels"] and not classifier.module.training
    probs = classifier.predict_proba(run["texts"], batch_size=5)  # batches of 5, 5, 2 sorted by length
    assert probs.shape == run["probs"].shape
    assert torch.allclose(probs, run["probs"], atol=1e-6, rtol=0)
    assert torch.equal(classifier.predict_proba(run["texts"], batch_size=5), probs)  # eval mode: no dropout
    assert classifier.predict(run["texts"]) == [run["labels"][i] for i in probs.argmax(dim=-1).tolist()]


def test_texts_of_the_wrong_form_are_refused(saved):
    with pytest.raises(TypeError, match=r"this classifier reads \(text_a, text_b\) pairs"):
        load_classifier(saved["prompt_tuning_tau_norm_pairs"]["ckpt"]).predict(["one text"])
    with pytest.raises(TypeError, match="this classifier reads strings"):
        load_classifier(saved["prompt_tuning"]["ckpt"]).predict([("a", "b")])


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    return {name: (root / name, export_classifier(saved[name]["ckpt"], root / name)) for name in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_exported_folder_loads_back_into_lt_tuning(variant, saved, exported):
    folder, auto_class = exported[variant]
    assert auto_class == VARIANTS[variant][4]
    if auto_class is None:
        assert json.loads((folder / "lt_tuning.json").read_text("utf-8"))["why_not_transformers"]
    probs = load_classifier(folder).predict_proba(saved[variant]["texts"])
    assert torch.allclose(probs, saved[variant]["probs"], atol=1e-6, rtol=0)


def test_exported_models_give_the_same_probabilities_in_plain_transformers(saved, exported, tmp_path):
    """README's lines of plain transformers, in a process that never imports lt_tuning."""
    texts = {name: saved[name]["texts"] for name in ("cls_tuning_tanh", "cls_tuning_tanh_roberta", "prompt_tuning")}
    script = "import json, sys\nresults = {}\n"
    readme_texts = '["头痛怎么办", "感冒吃什么药好"]'
    for name in ("cls_tuning_tanh", "cls_tuning_tanh_roberta"):
        block = readme_block('pipeline("text-classification"').replace('"exported"', json.dumps(str(exported[name][0])))
        script += block.replace(readme_texts, repr(texts[name]))
        script += f"results[{name!r}] = [{{row['label']: row['score'] for row in text}} for text in scores]\n"
    block = readme_block("AutoModelForMaskedLM").replace('"exported', json.dumps(str(exported["prompt_tuning"][0]))[:-1])
    script += block.replace(readme_texts, repr(texts["prompt_tuning"]))
    script += """results["prompt_tuning"] = probs
assert "lt_tuning" not in sys.modules
print(json.dumps(results))
"""
    (tmp_path / "plain.py").write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, "plain.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, rows in results.items():
        labels = saved[name]["labels"]
        plain = torch.tensor([[row[label] for label in labels] if isinstance(row, dict) else row for row in rows])
        assert (plain - saved[name]["probs"]).abs().max() <= 1e-5, name


def test_classify_command_classifies_unlabelled_files_in_input_order(saved, tmp_path, monkeypatch, capsys):
    ckpt = str(saved["prompt_tuning"]["ckpt"])
    texts = ['头痛怎么办 "急"', "感冒吃什么药好", "孕妇可以吃布洛芬吗"]
    (tmp_path / "new.txt").write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[2]}\n", encoding="utf-8")  # a blank line
    # the installed script, a fresh process, from another folder: the output lands there
    script = Path(sys.executable).with_name("lt-tuning")
    (tmp_path / "fresh").mkdir()
    done = subprocess.run([str(script), "classify", "--ckpt_path", ckpt, "--input", str(tmp_path / "new.txt"),
                           "--top_k", "2"], cwd=tmp_path / "fresh", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Wrote 3 predictions to new.predictions.tsv" in done.stdout
    written = tmp_path / "fresh" / "new.predictions.tsv"
    rows = [line.split("\t") for line in written.read_text("utf-8").splitlines()]
    assert rows[0] == ["text", "prediction", "probability", "prediction_2", "probability_2"]
    probs = load_classifier(ckpt).predict_proba(texts)
    labels = saved["prompt_tuning"]["labels"]
    for row, text, p in zip(rows[1:], texts, probs):
        top = p.topk(2)
        assert row == [text, labels[top.indices[0]], f"{top.values[0]:.6f}".rstrip("0"),
                       labels[top.indices[1]], f"{top.values[1]:.6f}".rstrip("0")]
    # lt-tuning reads its own TSV back as written (no CSV quoting around the quote in text 0)
    assert read_texts(written, ["text"], None, {})["text_a"] == texts
    # a table with the label column: the gold label beside the prediction; JSON lines by the suffix
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gold.tsv").write_text(f"label\ttext\n{labels[3]}\t{texts[1]}\n", encoding="utf-8")
    main(["classify", "--ckpt_path", ckpt, "--input", "gold.tsv", "--output", "gold.jsonl"])
    [row] = [json.loads(line) for line in (tmp_path / "gold.jsonl").read_text("utf-8").splitlines()]
    assert list(row) == ["text", "label", "prediction", "probability"] and row["label"] == labels[3]
    assert not (tmp_path / "lightning_logs").exists()  # no Trainer, no empty log folder


def test_readme_python_example_runs(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    block = readme_block("load_classifier(")
    block = block.replace('"lightning_logs/version_0/checkpoints/best-step=500.ckpt"', repr(str(saved["prompt_tuning"]["ckpt"])))
    namespace: dict = {}
    exec(block, namespace)
    assert namespace["probs"].shape == (2, 36)
    assert capsys.readouterr().out.strip() == str(namespace["classifier"].predict(["头痛怎么办", "感冒吃什么药好"]))


def test_predicting_a_split_without_labels_through_lightning(tiny_bert_dir, tmp_path, capsys):
    """`lt-tuning predict --config ...` on a split read with `label_field: null` (no gold labels)."""
    out = tmp_path / "unlabelled.tsv"
    main(["predict", "--config", str(ROOT / "examples/data/cmid.yaml"), "--config",
          str(ROOT / "examples/methods/prompt_tuning.yaml"), f"--data.init_args.data_dir={SHARED_DATA}",
          f"--data.init_args.model_name_or_path={tiny_bert_dir}", "--data.init_args.label_field=null",
          "--data.init_args.limit_examples=5", f"--data.init_args.cache_dir={tmp_path}", "--allow_untrained=true",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
          f"--prediction_writer.output_file={out}"])
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "text\tprediction\tprobability" and len(rows) == 6
    assert f"Wrote 5 predictions (test split) to {out}" in capsys.readouterr().out
