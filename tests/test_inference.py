"""Using a trained model: raw texts in, labels out, from the checkpoint alone; the CLI; export to plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED_DATA
from docblocks import code_block
from variants import CORE, VARIANTS
from lt_tuning import TextClassifier, load_classifier
from lt_tuning.classifier import CHARS_PER_TOKEN, default_device
from lt_tuning.cli import main
from lt_tuning.inference import export_classifier
from lt_tuning.onnx_runtime import OnnxClassifier
from lt_tuning.settings import ClassifierSettings

@pytest.mark.parametrize("variant", CORE)
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


@pytest.fixture(scope="session")
def exported(saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    return {name: (root / name, export_classifier(saved[name]["ckpt"], root / name)) for name in CORE}


@pytest.mark.parametrize("variant", CORE)
def test_every_exported_folder_loads_back_into_lt_tuning(variant, saved, exported):
    folder, auto_class = exported[variant]
    assert auto_class == VARIANTS[variant][4]
    settings = ClassifierSettings.load(folder)  # a typed object, beside the tokenizer's own files
    assert settings.labels == saved[variant]["labels"] and (folder / "tokenizer.json").is_file()
    assert settings.format == ("pytorch" if auto_class is None else "transformers")
    if auto_class is None:
        assert json.loads((folder / "lt_tuning.json").read_text("utf-8"))["why_not_transformers"]
    probs = load_classifier(folder).predict_proba(saved[variant]["texts"])
    assert torch.allclose(probs, saved[variant]["probs"], atol=1e-6, rtol=0)


def test_exported_models_give_the_same_probabilities_in_plain_transformers(saved, exported, tmp_path):
    """The docs' lines of plain transformers (docs/using-a-model.md), in a process that never imports lt_tuning."""
    texts = {name: saved[name]["texts"] for name in ("cls_tuning_tanh", "cls_tuning_tanh_roberta", "prompt_tuning")}
    script = "import json, sys\nresults = {}\n"
    readme_texts = '["头痛怎么办", "感冒吃什么药好"]'
    page = "docs/using-a-model.md"
    for name in ("cls_tuning_tanh", "cls_tuning_tanh_roberta"):
        block = code_block(page, 'pipeline("text-classification"').replace('"exported"', json.dumps(str(exported[name][0])))
        script += block.replace(readme_texts, repr(texts[name]))
        script += f"results[{name!r}] = [{{row['label']: row['score'] for row in text}} for text in scores]\n"
    block = code_block(page, "AutoModelForMaskedLM").replace('"exported', json.dumps(str(exported["prompt_tuning"][0]))[:-1])
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
    assert ("Wrote 3 predictions to new.predictions.tsv (1 blank line(s) left without a prediction: line 2)"
            in done.stdout)
    written = tmp_path / "fresh" / "new.predictions.tsv"
    rows = [line.split("\t") for line in written.read_text("utf-8").splitlines()]
    assert rows[0] == ["text", "prediction", "probability", "prediction_2", "probability_2"]
    assert rows[2] == [""] * 5  # row N is line N: the blank line keeps its row, without a prediction
    probs = load_classifier(ckpt).predict_proba(texts)
    labels = saved["prompt_tuning"]["labels"]
    for row, text, p in zip([rows[1], *rows[3:]], texts, probs, strict=True):
        top = p.topk(2)
        # as written, unquoted (lt-tuning's TSV reads back the quote in text 0 as it is)
        assert row == [text, labels[top.indices[0]], f"{top.values[0]:.6f}".rstrip("0"),
                       labels[top.indices[1]], f"{top.values[1]:.6f}".rstrip("0")]
    # a table with the label column: the gold label beside the prediction; JSON lines by the suffix
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gold.tsv").write_text(f"label\ttext\n{labels[3]}\t{texts[1]}\n", encoding="utf-8")
    main(["classify", "--ckpt_path", ckpt, "--input", "gold.tsv", "--output", "gold.jsonl"])
    [row] = [json.loads(line) for line in (tmp_path / "gold.jsonl").read_text("utf-8").splitlines()]
    assert list(row) == ["text", "label", "prediction", "probability"] and row["label"] == labels[3]
    assert not (tmp_path / "lightning_logs").exists()  # no Trainer, no empty log folder


def test_readme_python_example_runs(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    block = code_block("README.md", "load_classifier(")
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


# --- the edges of the Python API and of `classify` --------------------------------------------

def test_one_text_gives_one_result_and_no_texts_give_none(saved):
    run = saved["prompt_tuning"]
    classifier = TextClassifier.from_pretrained(run["ckpt"])  # as load_classifier
    text = run["texts"][0]
    assert classifier.predict(text) == classifier.predict([text])[0]  # one label, not one per character
    proba = classifier.predict_proba(text)
    assert proba.shape == (len(run["labels"]),) and torch.allclose(proba, run["probs"][0], atol=1e-6, rtol=0)
    assert classifier.predict([]) == [] and classifier.predict_proba([]).shape == (0, len(run["labels"]))
    as_numpy = classifier.predict_proba(run["texts"], as_numpy=True)
    assert isinstance(as_numpy, np.ndarray) and np.allclose(as_numpy, run["probs"].numpy(), atol=1e-6, rtol=0)
    assert classifier.device.type == default_device()  # one default for Python and the CLI
    pairs = load_classifier(saved["prompt_tuning_tau_norm_pairs"]["ckpt"])
    pair = saved["prompt_tuning_tau_norm_pairs"]["texts"][1]
    assert pairs.predict(pair) == pairs.predict([pair])[0]


def test_a_huge_text_is_cut_before_tokenizing(saved):
    """10 million characters classify in well under a second, as their first ones do: only
    ``max_length`` tokens are kept, and the cut (``max_length * CHARS_PER_TOKEN``) leaves more."""
    classifier = load_classifier(saved["cls_tuning_tanh"]["ckpt"])
    huge = "头痛怎么办，" * 2_000_000
    start = time.perf_counter()
    probs = classifier.predict_proba([huge])
    assert time.perf_counter() - start < 2.0
    assert torch.equal(probs, classifier.predict_proba([huge[:300]]))  # 300 characters: over 64 tokens already
    assert classifier.settings.max_length * CHARS_PER_TOKEN < len(huge)


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("头痛怎么办\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"error: notes.txt is not a checkpoint of `lt-tuning fit`"):
        main(["classify", "--ckpt_path", "notes.txt", "--input", "notes.txt"])
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")  # a torch file, not of `fit`
    with pytest.raises(ValueError, match="does not hold what classifying raw text needs"):
        load_classifier(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="has no lt_tuning.json"):
        load_classifier(tmp_path)


# --- ONNX: every variant, without torch --------------------------------------------------------

@pytest.fixture(scope="session")
def onnx_folders(saved, tmp_path_factory):
    """Each variant exported by `lt-tuning export --format onnx` (in-process)."""
    root = tmp_path_factory.mktemp("onnx")
    for name in VARIANTS:
        main(["export", "--ckpt_path", str(saved[name]["ckpt"]), "--output_dir", str(root / name), "--format", "onnx"])
    return {name: root / name for name in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_export_gives_pytorchs_probabilities(variant, saved, onnx_folders):
    """fp32 ONNX Runtime equals PyTorch within 1e-5, in batches of 1 and 7, from the shortest
    encoding (3 tokens for one CLS text) to ``max_length``."""
    import onnx

    folder = onnx_folders[variant]
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith("tokenizer")) == \
        ["lt_tuning.json", "model.onnx"]  # one self-contained graph, no external data
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    shapes = {node.name: [d.dim_param or d.dim_value for d in node.type.tensor_type.shape.dim] for node in graph.graph.input}
    assert shapes["input_ids"] == shapes["attention_mask"] == ["batch", "length"]
    assert ("mask_positions" in shapes) == (ClassifierSettings.load(folder).input_format == "prompt")
    torch_classifier = load_classifier(saved[variant]["ckpt"], "cpu")
    classifier = load_classifier(folder)
    assert isinstance(classifier, OnnxClassifier) and classifier.labels == torch_classifier.labels
    texts = list(saved[variant]["texts"])
    texts += [("头", "痛") if classifier.settings.pairs else "头", texts[0]]  # the shortest, and a repeat
    texts[1] = (texts[1][0] * 40, texts[1][1] * 40) if classifier.settings.pairs else texts[1] * 40  # cut to max_length
    lengths = [len(row["input_ids"]) for row in classifier.encode(texts)]
    assert max(lengths) == classifier.settings.max_length
    if variant == "cls_tuning_tanh":
        assert min(lengths) == 3
    expected = torch_classifier.predict_proba(texts, batch_size=7, as_numpy=True)
    run = saved[variant]  # the checkpoint gives the module's own probabilities (trainer.predict) on its texts
    assert np.abs(expected[2 : len(run["texts"])] - run["probs"][2:].numpy()).max() <= 1e-6
    for batch_size in (1, 7):
        probs = classifier.predict_proba(texts, batch_size=batch_size)
        assert isinstance(probs, np.ndarray) and np.abs(probs - expected).max() <= 1e-5


def test_int8_onnx_quantizes_the_matrix_products_and_agrees(saved, tmp_path):
    import onnx

    from lt_tuning.inference import export_classifier as export

    run = saved["prompt_tuning"]
    assert export(run["ckpt"], tmp_path / "int8", format="onnx", quantize="int8") is None
    quantized = load_classifier(tmp_path / "int8")
    assert quantized.settings.quantization == "int8"
    graph = onnx.load(str(tmp_path / "int8/model.onnx"))
    operators = {node.op_type for node in graph.graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= operators
    probs = quantized.predict_proba(run["texts"])
    assert np.abs(probs - run["probs"].numpy()).max() < 0.1 and probs.sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_classify_from_an_onnx_folder_imports_no_torch(saved, onnx_folders, tmp_path):
    """The installed `lt-tuning classify`, in a process where importing torch (or Lightning,
    torchmetrics, matplotlib, datasets) fails, writes the probabilities PyTorch gives."""
    blocked = ["torch", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "matplotlib", "datasets"]
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim/sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n")
    texts = saved["prompt_tuning"]["texts"][:5]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), *sys.path])}
    done = subprocess.run([str(Path(sys.executable).with_name("lt-tuning")), "classify", "--ckpt_path",
                           str(onnx_folders["prompt_tuning"]), "--input", "new.txt", "--output", "out.jsonl"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text("utf-8").splitlines()]
    probs = saved["prompt_tuning"]["probs"][:5]
    labels = saved["prompt_tuning"]["labels"]
    assert [row["prediction"] for row in rows] == [labels[i] for i in probs.argmax(dim=-1).tolist()]
    assert [row["probability"] for row in rows] == pytest.approx(probs.max(dim=-1).values.tolist(), abs=1e-5)
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "ModuleNotFoundError" in check.stderr  # the shim did block torch


def test_readme_deploy_commands_run(saved, tmp_path, monkeypatch, capsys):
    """The docs' "Deploy" export and classify lines (docs/using-a-model.md), on the prompt-tuning checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.txt").write_text("头痛怎么办\n感冒吃什么药好\n", encoding="utf-8")
    block = code_block("docs/using-a-model.md", "--format onnx").replace("\\\n", " ")
    lines = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("lt-tuning ")]
    assert [line[1] for line in lines] == ["export", "export", "classify", "serve"]
    ckpt = "lightning_logs/version_0/checkpoints/best-step=500.ckpt"
    for line in lines[:3]:
        main([str(saved["prompt_tuning"]["ckpt"]) if word == ckpt else word for word in line[1:]])
    assert "Wrote onnx-int8: an int8 ONNX graph" in capsys.readouterr().out
    assert ClassifierSettings.load(tmp_path / "onnx-int8").quantization == "int8"
    rows = (tmp_path / "new.predictions.tsv").read_text("utf-8").splitlines()
    assert rows[0].split("\t") == ["text", "prediction", "probability", "prediction_2", "probability_2",
                                   "prediction_3", "probability_3"] and len(rows) == 3
