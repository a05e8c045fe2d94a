"""Tuning modules: prompt logits, pt. LN, decoupled embeddings, eta-norm, losses, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM

from conftest import ROOT, SHARED_DATA, VERBALIZER, prompt_batch, prompt_module, require_split, write_cmid_run
import lt_tuning
from lt_tuning import ClsTuningModule, PromptTuningModule
from lt_tuning.cli import main
from lt_tuning.commands.lightning import build_cli
from lt_tuning.models import classification_loss, focal_loss, focal_loss_reference
from lt_tuning.models.backbone import encoder_inputs

@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_prompt_logits_match_masked_lm_outputs(arch, tiny_bert_dir, tiny_roberta_dir):
    path = tiny_bert_dir if arch == "bert" else tiny_roberta_dir
    module = prompt_module(path).eval()
    reference = AutoModelForMaskedLM.from_pretrained(path).eval()
    batch = prompt_batch(reference.config.vocab_size)
    with torch.no_grad():
        logits = module(batch)
        vocab = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.stack([
        torch.stack([vocab[b, batch["mask_positions"][b], row].mean() for row in VERBALIZER]) for b in range(4)
    ])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_pretrained_layer_norm_is_copied(arch, tiny_bert_dir, tiny_roberta_dir):
    path = tiny_bert_dir if arch == "bert" else tiny_roberta_dir
    mlm = AutoModelForMaskedLM.from_pretrained(path)
    source = mlm.cls.predictions.transform.LayerNorm if arch == "bert" else mlm.lm_head.layer_norm
    module = ClsTuningModule(path, num_classes=3, activation="relu", layer_norm="pretrained")
    kinds = [type(layer).__name__ for layer in module.head]
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Linear"]
    norm = module.head[2]
    torch.testing.assert_close(norm.weight, source.weight)
    torch.testing.assert_close(norm.bias, source.bias)
    assert not torch.allclose(norm.weight, torch.ones_like(norm.weight))  # not a fresh LayerNorm
    fresh = ClsTuningModule(path, num_classes=3, activation="relu", layer_norm="fresh")
    assert [type(layer).__name__ for layer in fresh.head] == ["Linear", "ReLU", "Dropout", "LayerNorm", "Linear"]
    torch.testing.assert_close(fresh.head[3].weight, torch.ones(32))


def test_decoupled_embeddings_are_untied(tiny_bert_dir):
    tied = prompt_module(tiny_bert_dir)
    with torch.no_grad():
        tied.mlm.get_input_embeddings().weight[7] += 1.0
    torch.testing.assert_close(tied.mlm.get_output_embeddings().weight[7], tied.mlm.get_input_embeddings().weight[7])

    module = prompt_module(tiny_bert_dir, decouple_embeddings=True)
    inputs, outputs = module.mlm.get_input_embeddings().weight, module.mlm.get_output_embeddings().weight
    torch.testing.assert_close(inputs, outputs)  # a copy at init
    before = outputs[7].clone()
    with torch.no_grad():
        inputs[7] += 1.0
    torch.testing.assert_close(outputs[7], before)
    assert inputs.data_ptr() != outputs.data_ptr()
    names = {name for name, _ in module.named_parameters()}
    assert "mlm.cls.predictions.decoder.weight" in names  # trained as a parameter of its own


def test_eta_norm_changes_logits_only_at_inference(tiny_bert_dir):
    torch.manual_seed(0)
    plain = ClsTuningModule(tiny_bert_dir, num_classes=3, dropout=0.0)
    normed = ClsTuningModule(tiny_bert_dir, num_classes=3, dropout=0.0, tau_norm=1.1)  # eta-norm
    batch = prompt_batch(plain.encoder.config.vocab_size)
    batch.pop("mask_positions")
    with torch.no_grad():  # classes 0, 1, 2 get weights 20u, u, -u along the mean feature u
        plain.eval()
        features = plain.head[:-1](plain.encoder(**encoder_inputs(batch)).last_hidden_state[:, 0])
        u = features.mean(0) / features.mean(0).norm()
        plain.head[-1].weight.copy_(torch.stack([20.0 * u, u, -u]))
        plain.head[-1].bias.zero_()
    normed.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.train(), normed.train()
        torch.manual_seed(1)  # the same encoder dropout masks in both
        train_normed = normed(batch)
        torch.manual_seed(1)
        torch.testing.assert_close(train_normed, plain(batch))
        plain.eval(), normed.eval()
        raw, scaled = plain(batch), normed(batch)
    norms = plain.head[-1].weight.norm(dim=1)
    torch.testing.assert_close(scaled, raw / norms**1.1)
    along = features @ u > 0  # there the head class 0 wins raw, class 1 after eta-norm (20 / 20^1.1 < 1)
    assert along.any()
    assert (raw.argmax(-1)[along] == 0).all() and (scaled.argmax(-1)[along] == 1).all()


def test_focal_losses_match_closed_forms():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    target = torch.tensor([0, 2])
    z = [math.exp(2.0) + 1 + math.exp(-1.0), math.exp(0.5) + math.exp(1.5) + 1]
    p = [math.exp(2.0) / z[0], 1.0 / z[1]]
    published = sum(-((1 - q) ** 2) * math.log(q) for q in p) / 2
    reference = sum(-(1 - math.log(q)) * math.log(q) for q in p) / 2
    assert focal_loss(logits, target, gamma=2.0).mean().item() == pytest.approx(published, rel=1e-6)
    assert focal_loss_reference(logits, target, gamma=1.0).mean().item() == pytest.approx(reference, rel=1e-6)
    cross_entropy = sum(-math.log(q) for q in p) / 2
    assert focal_loss(logits, target, gamma=0.0).mean().item() == pytest.approx(cross_entropy, rel=1e-6)
    assert classification_loss(logits, target).item() == pytest.approx(cross_entropy, rel=1e-6)
    assert classification_loss(logits, target, "focal_reference", 1.0).item() == pytest.approx(reference, rel=1e-6)


def test_modules_reading_the_mask_reject_cls_batches_naming_themselves(tiny_bert_dir):
    cls_batch = {"input_ids": torch.ones(1, 4, dtype=torch.long)}
    for module, reader in ((prompt_module(tiny_bert_dir), "PromptTuningModule"),
                           (ClsTuningModule(tiny_bert_dir, num_classes=3, use_prompt=True), "use_prompt=True")):
        with pytest.raises(ValueError, match=rf"{reader} needs prompt-format batches: .* input_format='prompt'"):
            module(cls_batch)


# --- the lt-tuning CLI --------------------------------------------------------------------

EXAMPLES = ROOT / "examples"
DATA_CONFIGS = sorted((EXAMPLES / "data").glob("*.yaml"))
METHOD_CONFIGS = sorted((EXAMPLES / "methods").glob("*.yaml"))


def test_examples_cover_every_cell_of_the_study():
    assert [p.stem for p in DATA_CONFIGS] == sorted(["cmid", "iflytek", "ctc", "msra", "r52"])
    study_rows = {  # Table 2's ten methods, each one config
        "cls_tuning_tanh", "cls_tuning_relu", "cls_tuning_eta_norm", "cls_tuning_focal", "cls_tuning_prompt",
        "cls_tuning_ln", "cls_tuning_pt_ln", "prompt_tuning", "prompt_tuning_focal", "prompt_tuning_ed",
    }
    assert study_rows <= {p.stem for p in METHOD_CONFIGS}


TWO_FIELD_METHODS = {"prompt_tuning_soft_prompt_pair"}  # templates with {text_b}: MSRA (sentence, entity)


@pytest.mark.parametrize("method", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_method_config_values_reach_the_module(method, tiny_bert_dir):
    """Each method config builds its module with every value it sets, and the CLI's links arrive."""
    config = yaml.safe_load(method.read_text(encoding="utf-8"))
    task = "msra" if method.stem in TWO_FIELD_METHODS else "cmid"
    cli = build_cli(["--config", str(EXAMPLES / "data" / f"{task}.yaml"), "--config", str(method),
                     "--data.data_dir", str(SHARED_DATA), "--data.model_name_or_path", tiny_bert_dir,
                     "--data.head_tail_from", "eval"], run=False)  # eval: no train split needed (MSRA has none here)
    model, data = cli.model, cli.datamodule
    assert f"lt_tuning.{type(model).__name__}" == config["model"]["class_path"]
    for key, value in config["model"].get("init_args", {}).items():
        assert model.hparams[key] == value, key
    data_args = config.get("data", {}).get("init_args", {})
    assert set(data_args) <= {"template"} and data.template == data_args.get("template", data.template)
    assert model.num_classes == data.num_classes and data.input_format == model.input_format
    if isinstance(model, PromptTuningModule):
        assert model.verbalizer is data.verbalizer


def test_cli_refuses_a_data_input_format_the_model_does_not_read(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"data.input_format='cls' but PromptTuningModule reads 'prompt' batches"):
        build_cli(["--config", str(EXAMPLES / "data" / "cmid.yaml"),
                   "--config", str(EXAMPLES / "methods" / "prompt_tuning.yaml"), "--data.data_dir", str(SHARED_DATA),
                   "--data.model_name_or_path", tiny_bert_dir, "--data.input_format", "cls"], run=False)


@pytest.mark.parametrize("data", DATA_CONFIGS, ids=lambda p: p.stem)
def test_data_configs_print_their_values(data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(data), "--config", str(METHOD_CONFIGS[0]), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    config = yaml.safe_load(data.read_text(encoding="utf-8"))["data"]
    assert printed["data"]["class_path"] == config["class_path"]
    assert printed["data"]["init_args"].items() >= config["init_args"].items()
    assert printed["checkpoint"]["monitor"] == "val/f1"
    spec = getattr(lt_tuning, config["class_path"].rsplit(".", 1)[1]).spec  # effective defaults, not null
    assert printed["data"]["init_args"].items() >= {
        "template": spec.template, "max_length": spec.max_length, "head_tail_ratio": spec.head_tail_ratio}.items()


def write_run_config(tmp_path: Path, model_dir: str, module: str) -> Path:
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "runs")}}
    return write_cmid_run(tmp_path, model_dir, f"lt_tuning.{module}", data={"limit_examples": 200, "batch_size": 16},
                          model={"learning_rate": 0.001},
                          trainer={"max_epochs": 1, "val_check_interval": 5,
                                   "logger": logger},  # metrics.csv, whichever logger is the default
                          plots={"enabled": False})


def test_cli_fit_then_test_from_checkpoint(tmp_path, tiny_bert_dir, capsys):
    """In one process; prompt-tuning does the same on 2 processes against 1 in test_multiprocess.py,
    and its checkpoint classifies raw text alone in test_inference.py."""
    require_split("cmid", "train")
    module = "ClsTuningModule"
    config = write_run_config(tmp_path, tiny_bert_dir, module)
    main(["fit", "--config", str(config)])
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    fitted = json.loads((run / "test_metrics.json").read_text())
    assert set(fitted) >= {"test/acc", "test/f1", "test/head_f1", "test/tail_f1"}
    assert len(fitted["test/per_class_f1"]) == 36
    assert "val/f1" in (run / "metrics.csv").read_text().splitlines()[0]
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    reloaded = getattr(lt_tuning, module).load_from_checkpoint(best, map_location="cpu")  # the checkpoint alone
    assert reloaded.class_weight_norms().shape == (36,)

    main(["test", "--config", str(config), "--ckpt_path", str(best)])
    tested = json.loads((tmp_path / "runs" / "lightning_logs" / "version_1" / "test_metrics.json").read_text())
    assert tested == fitted

    out = tmp_path / "pred.tsv"
    main(["predict", "--config", str(config), "--ckpt_path", str(best), "--prediction_writer.output_file", str(out)])
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "text\tlabel\tprediction\tprobability" and len(rows) == 201  # the gold label beside
    assert f"Wrote 200 predictions (test split) to {out}\n" in capsys.readouterr().out
    text, gold, label, prob = rows[1].split("\t")
    assert [text, gold] == (SHARED_DATA / "cmid" / "test.tsv").read_text("utf-8").split("\n")[1].rstrip("\r").split("\t")
    assert label in json.loads((SHARED_DATA / "cmid" / "label2idx.json").read_text("utf-8"))
    assert 1 / 36 <= float(prob) <= 1.0


def test_cls_tuning_drops_the_mlm_head_quietly_and_names_missing_encoder_weights(tiny_bert_dir, tmp_path, capfd):
    """CLS-tuning on a masked-LM checkpoint drops its MLM head by design: no loading report of
    "UNEXPECTED" keys. Encoder weights missing from a checkpoint still get a warning naming them."""
    from safetensors.torch import load_file, save_file

    ClsTuningModule(tiny_bert_dir, num_classes=3)
    assert "LOAD REPORT" not in capfd.readouterr().err
    folder = tmp_path / "partial"
    AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"1 encoder weight\(s\) are not in the checkpoint and start from random "
                                         r"values: encoder\.layer\.1\.output\.dense\.weight\."):
        ClsTuningModule(str(folder), num_classes=3)
