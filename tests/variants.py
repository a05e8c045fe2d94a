"""The trained-model variants the inference, export and serving tests share: every CLS head, prompt-tuning,
soft prompts, the inference-time remedies, a pair task; one tiny checkpoint each, built on first use (conftest's ``saved``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from lt_tuning import ClsTuningModule, CMIDDataModule, MSRADataModule, PromptTuningModule

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
SOFT_PROMPT = {"template": "{cls}{text_a}{p0}{p1}{p2}{p3}{mask}{sep}"}
POSTHOC = {"logit_adjustment": "posthoc"}
VARIANTS = {  # name -> (DataModule, module, its arguments, backbone, transformers' Auto class of its export, data args)
    "prompt_tuning": (CMIDDataModule, PromptTuningModule, {}, "bert", "AutoModelForMaskedLM", {}),
    "cls_tuning_tanh": (CMIDDataModule, ClsTuningModule, {}, "bert", "AutoModelForSequenceClassification", {}),
    "cls_tuning_tanh_roberta": (CMIDDataModule, ClsTuningModule, {}, "roberta", "AutoModelForSequenceClassification", {}),
    "cls_tuning_relu": (CMIDDataModule, ClsTuningModule, {"activation": "relu"}, "bert", None, {}),
    "cls_tuning_ln": (CMIDDataModule, ClsTuningModule, {"activation": "relu", "layer_norm": "fresh"}, "bert", None, {}),
    "cls_tuning_pt_ln": (CMIDDataModule, ClsTuningModule, {"layer_norm": "pretrained"}, "bert", None, {}),
    "cls_tuning_prompt": (CMIDDataModule, ClsTuningModule, {"activation": "relu", "use_prompt": True}, "bert", None, {}),
    "cls_tuning_soft_prompt": (CMIDDataModule, ClsTuningModule, {"use_prompt": True}, "bert", None, SOFT_PROMPT),
    "cls_tuning_eta_norm": (CMIDDataModule, ClsTuningModule, {"tau_norm": 1.1}, "bert", None, {}),
    "cls_tuning_posthoc_la": (CMIDDataModule, ClsTuningModule, POSTHOC, "bert", None, {}),
    "prompt_tuning_soft_prompt": (CMIDDataModule, PromptTuningModule, {"soft_prompt_init": "类别"}, "bert",
                                  "AutoModelForMaskedLM", SOFT_PROMPT),
    "prompt_tuning_posthoc_la": (CMIDDataModule, PromptTuningModule, POSTHOC, "bert", None, {}),
    "prompt_tuning_tau_norm_pairs": (MSRADataModule, PromptTuningModule, {"tau_norm": 1.0}, "bert", None, {}),
    "cls_tuning_tanh_pairs": (MSRADataModule, ClsTuningModule, {}, "bert", "AutoModelForSequenceClassification", {}),
}

# The variants the PyTorch loading and export tests run (the ONNX tests run every one, and check
# PyTorch's loading of each against ``trainer.predict`` on the way).
CORE = ["prompt_tuning", "cls_tuning_tanh", "cls_tuning_tanh_roberta", "cls_tuning_pt_ln", "prompt_tuning_tau_norm_pairs"]


class Checkpoints(Mapping):
    """Variant name -> a checkpoint whose backbone folder no longer exists, the test texts, and the
    module's own probabilities on them (through the DataModule and ``trainer.predict``); each
    variant is built on first use, so that a test of one variant pays for that one only.

    The weights are the tiny backbone's plus noise, so that probabilities are far from uniform and
    a wrong head, remedy or mask position shows."""

    def __init__(self, root: Path, data_dir: Path, backbones: dict[str, str]) -> None:
        self.root, self.data_dir, self.backbones = root, data_dir, backbones
        self.built: dict[str, dict] = {}

    def __iter__(self):
        return iter(VARIANTS)

    def __len__(self) -> int:
        return len(VARIANTS)

    def __getitem__(self, name: str) -> dict:
        if name not in self.built:
            self.built[name] = self._build(name)
        return self.built[name]

    def _build(self, name: str) -> dict:
        datamodule, module_class, arguments, arch, _, data_args = VARIANTS[name]
        root = self.root
        backbone = shutil.copytree(self.backbones[arch], root / f"backbone-{name}")
        prompt = module_class is PromptTuningModule or arguments.get("use_prompt", False)
        dm = datamodule(data_dir=str(self.data_dir), model_name_or_path=str(backbone), limit_examples=12,
                        eval_batch_size=12, input_format="prompt" if prompt else "cls", cache_dir=str(root / "cache"),
                        **data_args)
        pl.seed_everything(0)
        extra = {"verbalizer": dm.verbalizer} if module_class is PromptTuningModule else {}
        if arguments.get("logit_adjustment"):
            extra["train_class_counts"] = dm.train_class_counts
        if data_args:
            extra["vocab_size"] = dm.vocab_size
        model = module_class(str(backbone), num_classes=dm.num_classes, **extra, **arguments)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.3)
        trainer = pl.Trainer(limit_val_batches=1, **QUIET)
        trainer.validate(model, dm, verbose=False)
        trainer.save_checkpoint(root / f"{name}.ckpt")
        [batch] = trainer.predict(model, dm)
        examples = dm.examples["test"]
        texts = list(zip(examples["text_a"], examples["text_b"])) if "text_b" in examples else examples["text_a"]
        shutil.rmtree(backbone)  # the checkpoint must not need it
        return {"ckpt": root / f"{name}.ckpt", "texts": texts, "labels": dm.label_names,
                "probs": batch["probs"][batch["index"].argsort()]}
