"""What every lt-tuning LightningModule shares: the study's training recipe and its metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, get_linear_schedule_with_warmup

from lt_tuning.metrics import (SHOT_THRESHOLDS, MacroOver, calibration_metrics, long_tailed_metrics,
                                tail_to_head_share, top_confusions)
from lt_tuning.models.backbone import grow_embeddings
from lt_tuning.models.losses import LossName, classification_loss
from lt_tuning.models.posthoc import choose_posthoc_tau, fit_temperature
from lt_tuning.models.remedies import class_balanced_weights, log_prior, logit_adjust, tau_normalize

STAGES = ("val", "test")
# logged with the progress bar during fit; the other metrics go to the logger and the test table only
PROGRESS_BAR = ("acc", "f1", "head_f1", "tail_f1")


class LongTailedClassifier(pl.LightningModule):
    """Base of the tuning modules: loss, AdamW + linear warmup schedule, the metrics (acc, F1,
    head/tail and many/medium/few-shot F1, where the tail's errors go, calibration error).

    Subclasses implement :meth:`class_scores` (batch -> raw logits ``[B, C]``) and
    :meth:`class_weight_norms`, and declare ``input_format`` (``"cls"`` or ``"prompt"``): the
    encoding their batches need, which the DataModule is told (by the lt-tuning CLI, or as its
    ``input_format`` argument in Python). ``forward`` adds the inference-time remedies.

    Args:
        model_name_or_path: the pretrained encoder (hub name or local folder).
        num_classes: number of labels (the CLI links it from the DataModule).
        loss: ``cross_entropy``, ``focal`` (Lin et al.) or ``focal_reference`` (the study's code).
        focal_gamma: gamma of either focal loss (the study used 1.0 with ``focal_reference``).
        learning_rate: AdamW's peak learning rate (linear schedule with warmup).
        weight_decay: AdamW's weight decay; bias and LayerNorm weights never decay.
        warmup_proportion: the share of the schedule spent warming up.
        adam_epsilon: AdamW's eps; 1e-6 as in the study (transformers' AdamW), not torch's 1e-8.
        head_tail_ratio: the head/tail ratio of the metrics' split (linked from the DataModule).
        class_counts: the counts that split the metrics (linked from the DataModule);
            ``None`` splits on each evaluated set itself (the study).
        f1_over: ``val/f1``/``test/f1`` average per-class F1 over the ``present`` classes (in
            the split's labels or predictions: scikit-learn's macro F1, the study's) or ``all``.
        train_class_counts: training examples per class, the priors of the remedies below
            (linked from the DataModule by the CLI).
        logit_adjustment: ``loss`` adds ``tau * log prior`` to the logits inside the loss,
            ``posthoc`` subtracts it at inference (Menon et al. 2021; see
            :func:`~lt_tuning.models.remedies.logit_adjust`); ``none`` does neither.
        logit_adjustment_tau: the tau of either logit adjustment; ``"auto"`` (post-hoc only): the
            tau of :data:`~lt_tuning.models.posthoc.POSTHOC_TAU_GRID` with the best dev macro F1,
            chosen after fit (:func:`lt_tuning.recipe.best_checkpoint_test`) and saved in the
            best checkpoint as the ``posthoc_tau`` buffer.
        class_balanced_beta: weight the loss by the inverse effective number of samples
            (Cui et al. 2019) with this beta, e.g. 0.999; None: unweighted.
        tau_norm: at inference, divide each class logit by ``||w_c||^tau`` (Kang et al. 2020);
            ``w_c`` is the class's weight vector (:meth:`class_weight_norms`). None: off.
        vocab_size: the tokenizer's size with the template's pseudo tokens (linked from the
            DataModule); embeddings grow to it, giving each ``{p0}``, ``{p1}``... a trainable row.
        soft_prompt_init: a word whose mean embedding starts every pseudo token; None: random.
        temperature_scaling: after fit, fit a softmax temperature on the dev logits (L-BFGS on
            their NLL) and save it in the best checkpoint (the ``temperature`` buffer); the
            inference logits (``forward`` in eval mode: probabilities, export, serving) are
            divided by it. The argmax, so acc and F1, stay; the test reports the ECE before and after.
        shot_thresholds: ``(many, few)``: the many/medium/few-shot buckets of the metrics (more
            than ``many``, ``few`` to ``many``, fewer than ``few`` training examples; needs
            ``train_class_counts``).
    """

    input_format: str = "cls"

    def __init__(
        self,
        model_name_or_path: str,
        num_classes: int,
        loss: LossName = "cross_entropy",
        focal_gamma: float = 1.0,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_proportion: float = 0.1,
        adam_epsilon: float = 1e-6,
        head_tail_ratio: float = 0.65,
        class_counts: Sequence[int] | None = None,
        f1_over: MacroOver = "present",
        train_class_counts: Sequence[int] | None = None,
        logit_adjustment: Literal["none", "loss", "posthoc"] = "none",
        logit_adjustment_tau: float | Literal["auto"] = 1.0,
        class_balanced_beta: float | None = None,
        tau_norm: float | None = None,
        vocab_size: int | None = None,
        soft_prompt_init: str | None = None,
        temperature_scaling: bool = False,
        shot_thresholds: tuple[int, int] = SHOT_THRESHOLDS,
    ) -> None:
        super().__init__()
        # Also collects the calling subclass's own arguments; a verbalizer is a submodule, saved as state.
        self.save_hyperparameters(ignore=["verbalizer"])
        self.num_classes = num_classes
        uses_priors = logit_adjustment != "none" or class_balanced_beta is not None
        if uses_priors and train_class_counts is None:
            raise ValueError(
                "logit_adjustment and class_balanced_beta need the training class counts: pass "
                "train_class_counts (the lt-tuning CLI links them from the DataModule's train split)."
            )
        if logit_adjustment_tau == "auto" and logit_adjustment != "posthoc":
            raise ValueError("logit_adjustment_tau='auto' is chosen on dev after training: it needs "
                             f"logit_adjustment='posthoc', not {logit_adjustment!r}.")
        if train_class_counts is not None and len(train_class_counts) != num_classes:
            raise ValueError(f"train_class_counts has {len(train_class_counts)} entries for {num_classes} classes.")
        counts = train_class_counts if uses_priors else None
        self.register_buffer("class_log_prior", log_prior(counts) if counts is not None else None, persistent=False)
        weights = class_balanced_weights(counts, class_balanced_beta) if class_balanced_beta is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        # Fitted on dev after training (see temperature_scaling, logit_adjustment_tau), saved in checkpoints.
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("posthoc_tau", torch.tensor(self._initial_posthoc_tau()))
        self.metrics = nn.ModuleDict({
            stage: long_tailed_metrics(num_classes, head_tail_ratio, class_counts, f1_over, train_class_counts,
                                       shot_thresholds) for stage in STAGES
        })
        buckets = self.metrics["test"]["shots"].buckets if train_class_counts is not None else {}
        self.calibration = nn.ModuleDict({"ece": calibration_metrics(num_classes, buckets)})
        if temperature_scaling:
            self.calibration["ece_before_temperature"] = calibration_metrics(num_classes, buckets,
                                                                             "ece_before_temperature")
        self.last_test_metrics: dict[str, float | list] | None = None  # the latest test's result
        self.posthoc_fit: dict[str, float] | None = None  # what the latest fit on dev chose
        self._dev_outputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _initial_posthoc_tau(self) -> float:
        tau = self.hparams.logit_adjustment_tau
        return 1.0 if tau == "auto" else float(tau)

    def _grow_embeddings(self, model: PreTrainedModel) -> None:
        """Give the template's pseudo tokens embedding rows (see ``vocab_size``)."""
        if self.hparams.vocab_size is None:
            return
        init_ids = None
        if self.hparams.soft_prompt_init:
            tokenizer = AutoTokenizer.from_pretrained(self.hparams.model_name_or_path)
            init_ids = tokenizer(self.hparams.soft_prompt_init, add_special_tokens=False)["input_ids"]
            if not init_ids or tokenizer.unk_token_id in init_ids:
                raise ValueError(f"soft_prompt_init={self.hparams.soft_prompt_init!r} is empty or [UNK] in the tokenizer.")
        grow_embeddings(model, self.hparams.vocab_size, init_ids)

    # --- logits -------------------------------------------------------------------------

    def class_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw class logits ``[B, C]`` of ``batch`` (subclasses)."""
        raise NotImplementedError

    def class_weight_norms(self) -> torch.Tensor:
        """``||w_c||`` per class, ``w_c`` the vector whose dot product with the feature gives logit c."""
        raise NotImplementedError

    @property
    def backbone(self) -> PreTrainedModel:
        """The transformers model inside (subclasses)."""
        raise NotImplementedError

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint from before the dev-fitted buffers gets their defaults (temperature 1, the given tau)."""
        state = checkpoint["state_dict"]
        state.setdefault("temperature", torch.ones(()))
        state.setdefault("posthoc_tau", torch.tensor(self._initial_posthoc_tau()))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the module's class and its backbone's config, so that a checkpoint rebuilds the
        classifier without the backbone's folder (:func:`lt_tuning.load_classifier`)."""
        checkpoint["lt_tuning"] = {"module": f"{type(self).__module__}.{type(self).__qualname__}",
                                   "backbone_config": self.backbone.config.to_dict()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits; at inference (eval mode) :meth:`inference_logits`."""
        scores = self.class_scores(batch)
        return scores if self.training else self.inference_logits(scores)

    def inference_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """Raw class scores after tau-normalisation, post-hoc logit adjustment and the temperature.

        The dev-fitted buffers act only where their fit is on (``temperature_scaling``, tau
        ``"auto"``): a state dict loaded into a module configured otherwise follows its arguments.
        """
        logits = self._adjusted(self._normalized(scores))
        return logits / self.temperature if self.hparams.temperature_scaling else logits

    def _normalized(self, scores: torch.Tensor) -> torch.Tensor:
        if self.hparams.tau_norm is None:
            return scores
        return tau_normalize(scores, self.class_weight_norms(), self.hparams.tau_norm)

    def _adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        if self.hparams.logit_adjustment != "posthoc":
            return logits
        tau = self.posthoc_tau if self.hparams.logit_adjustment_tau == "auto" else self.hparams.logit_adjustment_tau
        return logit_adjust(logits, self.class_log_prior, -tau)

    # --- steps --------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Give the metrics the DataModule's label names, for their messages."""
        names = getattr(self.trainer.datamodule, "label_names", None)  # None without a DataModule of lt-tuning
        for metrics in self.metrics.values():
            metrics["head_tail"].label_names = names

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        if self.hparams.logit_adjustment == "loss":
            logits = logit_adjust(logits, self.class_log_prior, self.hparams.logit_adjustment_tau)
        loss = classification_loss(
            logits, batch["labels"], self.hparams.loss, self.hparams.focal_gamma, class_weights=self.class_weights
        )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        scores = self.class_scores(batch)
        if self._dev_outputs is not None:
            self._dev_outputs.append((self._normalized(scores).detach().float().cpu(), batch["labels"].cpu()))
        self.metrics["val"].update(self.inference_logits(scores).argmax(dim=-1), batch["labels"])

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.metrics["test"].update(logits.argmax(dim=-1), batch["labels"])
        self.calibration["ece"].update(logits.float().softmax(dim=-1), batch["labels"])
        if self.hparams.temperature_scaling:
            self.calibration["ece_before_temperature"].update((logits * self.temperature).float().softmax(dim=-1),
                                                              batch["labels"])

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "probs": self(batch).float().softmax(dim=-1)}

    def _log_epoch(self, stage: str) -> dict[str, float | list]:
        computed = self.metrics[stage].compute()  # head_tail's and shots' dicts arrive flattened
        self.metrics[stage].reset()
        per_class, confusion = computed.pop("per_class_f1"), computed.pop("confusion")
        head_tail = self.metrics[stage]["head_tail"]
        head, tail = head_tail.last_split
        share = tail_to_head_share(confusion, head, tail) if head and tail else None
        if share is not None:
            computed["tail_to_head_share"] = torch.tensor(share)
        if "shots" in self.metrics[stage]:
            computed.update({f"{shot}_classes": torch.tensor(float(len(classes)))
                             for shot, classes in self.metrics[stage]["shots"].buckets.items()})
        if stage == "test":
            for collection in self.calibration.values():
                computed.update({name: value for name, value in collection.compute().items() if not value.isnan()})
                collection.reset()
            if self.hparams.temperature_scaling:
                computed["temperature"] = self.temperature
            if self.hparams.logit_adjustment == "posthoc":
                computed["posthoc_tau"] = self.posthoc_tau
        values = {f"{stage}/{name}": value for name, value in computed.items()}
        # Reduced across processes already, so equal on all: "max" syncs them exactly (Lightning
        # would warn about an unsynced value, and "mean" could round).
        for bar in (True, False):
            self.log_dict({key: value for key, value in values.items() if (key.split("/")[1] in PROGRESS_BAR) == bar},
                          prog_bar=bar and stage == "val", sync_dist=True, reduce_fx="max")
        result: dict[str, float | list] = {key: float(value) for key, value in values.items()}
        result[f"{stage}/per_class_f1"] = per_class.tolist()
        # Which classes were head and tail (indices, head to tail), and the per-class counts that split them.
        result[f"{stage}/head_classes"], result[f"{stage}/tail_classes"] = head_tail.last_split
        result[f"{stage}/head_tail_counts"] = head_tail.last_counts
        if "shots" in self.metrics[stage]:
            result[f"{stage}/train_class_counts"] = list(self.hparams.train_class_counts)
            result[f"{stage}/shot_classes"] = self.metrics[stage]["shots"].buckets
            result[f"{stage}/shot_thresholds"] = list(self.hparams.shot_thresholds)
        result[f"{stage}/confusion_matrix"] = confusion.tolist()  # rows: true class, columns: predicted
        result[f"{stage}/top_confusions"] = [list(pair) for pair in top_confusions(confusion)]
        if stage == "test" and self.posthoc_fit is not None:
            result["test/posthoc_fit"] = dict(self.posthoc_fit)  # the dev fit of this session, NLL before/after
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self._dev_outputs is not None:
            self._fit_posthoc()

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self._log_epoch("test")  # for callbacks (TestMetricsWriter, PlotWriter) and notebooks

    # --- fitted on dev after training ----------------------------------------------------

    @property
    def fits_posthoc(self) -> bool:
        """Whether settings are fitted on dev after training (temperature scaling, tau ``"auto"``)."""
        return self.hparams.temperature_scaling or self.hparams.logit_adjustment_tau == "auto"

    def collect_dev_logits(self) -> None:
        """Make the next validation fit the post-hoc settings on its logits (all processes')."""
        self._dev_outputs = []

    def _fit_posthoc(self) -> None:
        parts = [(torch.cat([s for s, _ in self._dev_outputs]), torch.cat([y for _, y in self._dev_outputs]))]
        self._dev_outputs = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, parts[0])
            parts = gathered
        scores, labels = torch.cat([s for s, _ in parts]), torch.cat([y for _, y in parts])
        if self.hparams.logit_adjustment_tau == "auto":
            self.posthoc_tau.fill_(choose_posthoc_tau(scores, labels, self.class_log_prior.cpu(),
                                                      f1_over=self.hparams.f1_over))
        logits = self._adjusted(scores.to(self.posthoc_tau.device)).cpu()
        fit: dict[str, float] = {"dev_examples": len(labels)}
        if self.hparams.logit_adjustment == "posthoc":
            fit["posthoc_tau"] = float(self.posthoc_tau)
        if self.hparams.temperature_scaling:
            self.temperature.fill_(fit_temperature(logits, labels))
            fit.update(temperature=float(self.temperature),
                       dev_nll_before=float(F.cross_entropy(logits, labels)),
                       dev_nll_after=float(F.cross_entropy(logits / float(self.temperature), labels)))
        self.posthoc_fit = fit

    # --- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        return adamw_with_warmup(self, self.hparams.learning_rate, self.hparams.weight_decay,
                                 self.hparams.warmup_proportion, eps=self.hparams.adam_epsilon)


def adamw_with_warmup(module: pl.LightningModule, learning_rate: float, weight_decay: float,
                      warmup_proportion: float, total_steps: int | None = None, eps: float = 1e-8) -> dict:
    """AdamW (``eps``, default torch's) without decay on bias/LayerNorm, linear decay after linear
    warmup, stepped per batch over ``total_steps`` (default: the trainer's step budget)."""
    no_decay, decay, seen = [], [], set()
    for submodule in module.modules():
        for name, param in submodule.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # tied weights appear twice
                continue
            seen.add(id(param))
            plain = name == "bias" or isinstance(submodule, nn.LayerNorm) or "LayerNorm" in type(submodule).__name__
            (no_decay if plain else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        eps=eps,
    )
    total = total_steps or module.trainer.estimated_stepping_batches
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_proportion * total), total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
