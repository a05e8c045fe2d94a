"""Callbacks of the lt-tuning CLI."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from pytorch_lightning.utilities import rank_zero_warn

from lt_tuning import plots
from lt_tuning.data import LongTailedDataModule, MaskedLMCorpusDataModule
from lt_tuning.data.reading import write_table
from lt_tuning.inference import prediction_columns
from lt_tuning.io import atomic_write_json
from lt_tuning.models import LongTailedClassifier
from lt_tuning.models.backbone import load_masked_lm
from lt_tuning.models.masked_lm import masked_token_accuracy


class PredictionWriter(BasePredictionWriter):
    """Write one row per predicted example: its text field(s), its gold label where the split has
    labels, the ``top_k`` predicted labels and their probabilities (see
    :func:`~lt_tuning.inference.prediction_columns`), in input order, as TSV, CSV or JSON lines
    by the file's suffix (:func:`~lt_tuning.data.reading.write_table`).

    On several processes each predicts its share; the rows are gathered and written once, by the
    global-zero process.

    Args:
        output_file: where to write; default ``<log dir>/predictions.tsv``.
        top_k: how many labels per example, most probable first.
    """

    def __init__(self, output_file: str | None = None, top_k: int = 1) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file
        self.top_k = top_k

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions, batch_indices) -> None:
        rows = {index: probs for batch in predictions for index, probs in zip(batch["index"].tolist(), batch["probs"].cpu())}
        rows = gather_dicts(rows, trainer.world_size)
        path = Path(self.output_file or Path(log_dir(trainer)) / "predictions.tsv")
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        split = datamodule.predict_split
        order = sorted(rows)
        texts = {key: [values[index] for index in order] for key, values in datamodule.examples[split].items()}
        probs = torch.stack([rows[index] for index in order])
        write_table(path, prediction_columns(texts, datamodule.label_spec, probs, self.top_k))
        print(f"Wrote {len(rows)} predictions ({split} split) to {path}")


def gather_dicts(part: dict, world_size: int) -> dict:
    """Every process's ``part`` merged, on every process (a collective call: all must make it)."""
    if world_size == 1:
        return part
    parts: list[dict] = [{} for _ in range(world_size)]
    torch.distributed.all_gather_object(parts, part)
    return {key: value for each in parts for key, value in each.items()}


def log_dir(trainer: pl.Trainer) -> str:
    """The trainer's log dir, else its root dir. ``trainer.log_dir`` is a broadcast from rank 0:
    every process must ask for it, or the run hangs; callbacks ask before any rank-0-only work."""
    return trainer.log_dir or trainer.default_root_dir


class StepSeed(Callback):
    """Seed torch's random generator before every training batch from (seed, batch number, rank).

    The random draws of a step (dropout) then depend only on where the step is in training,
    not on what else ran in the process before it (a validation, a restart), so a run resumed
    from a mid-epoch checkpoint draws what the uninterrupted run drew and ends with the same
    weights.

    Args:
        seed: base seed; None takes ``seed_everything``'s (``$PL_GLOBAL_SEED``), else torch's
            initial seed of the process.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._base = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        batch_number = trainer.fit_loop.total_batch_idx  # counts across epochs, restored on resume
        torch.manual_seed(((self._base * 1_000_003 + batch_number) * 4099 + trainer.global_rank) % 2**63)


class TestMetricsWriter(Callback):
    """After a test, write the module's metrics (acc, macro F1, head/tail F1, per-class F1) as
    ``test_metrics.json`` in the trainer's log dir, from the global-zero process (the metrics
    are reduced over all processes already). With a :class:`LongTailedDataModule`, the head and
    tail classes are named too, head to tail, with the class counts that split them (see
    :func:`name_head_tail`)."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = getattr(pl_module, "last_test_metrics", None)
        folder = log_dir(trainer)
        if trainer.is_global_zero and result is not None:
            if isinstance(pl_module, LongTailedClassifier) and isinstance(trainer.datamodule, LongTailedDataModule):
                result = name_head_tail(result, trainer.datamodule)
            atomic_write_json(Path(folder) / "test_metrics.json", result)


def name_head_tail(result: dict[str, Any], datamodule: LongTailedDataModule) -> dict[str, Any]:
    """``result`` with its head/tail class indices as label names: ``head_classes`` and
    ``tail_classes`` (head to tail), and ``head_tail_counts``: the split whose counts divided
    them (``test``, or ``train`` with ``head_tail_from="train"``) and each class's count, in
    that order (classes absent from the test split, in neither group under the default rule, last)."""
    result, names = dict(result), datamodule.label_names
    head, tail, counts = (result.pop(f"test/{key}") for key in ("head_classes", "tail_classes", "head_tail_counts"))
    order = head + tail + [c for c in range(len(names)) if c not in head + tail]
    return {**result, "head_classes": [names[c] for c in head], "tail_classes": [names[c] for c in tail],
            "head_tail_counts": {"split": "train" if datamodule.head_tail_from == "train" else "test",
                                 "counts": {names[c]: counts[c] for c in order}}}


class ValidateLastStep(Callback):
    """Validate after the last training step of a step or epoch budget, if the interval missed it.

    Validation runs every ``val_check_interval`` steps; a budget that is not a multiple of it
    would end with steps no evaluation saw, and one shorter than an interval with no best
    checkpoint at all. Asking the trainer to stop at the last step makes Lightning validate
    there (as it does when early stopping asks), and only there.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_step = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if last_step or (last_epoch and trainer.is_last_batch):
            trainer.should_stop = True


class PlotWriter(Callback):
    """After a test, save the head-to-tail figures of :mod:`lt_tuning.plots` as PNGs.

    ``class_distribution.png`` (training examples per class), ``per_class_f1.png`` (the test's
    per-class F1) and ``weight_norms.png`` (the module's ``class_weight_norms``), all
    in training-count order with the head/tail boundary of the DataModule's ratio. With
    ``head_tail_from="eval"`` (no training counts for the metrics) the test split's counts
    order the classes, as they split the test metrics. Written by the global-zero process.

    Args:
        enabled: ``False`` writes nothing (``--plots.enabled false``).
        output_dir: where to write; default the trainer's log dir.
    """

    FILES = ("class_distribution.png", "per_class_f1.png", "weight_norms.png")

    def __init__(self, enabled: bool = True, output_dir: str | None = None) -> None:
        self.enabled = enabled
        self.output_dir = output_dir

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        datamodule = trainer.datamodule
        if not isinstance(pl_module, LongTailedClassifier) or pl_module.last_test_metrics is None \
                or not isinstance(datamodule, LongTailedDataModule):
            rank_zero_warn("PlotWriter plots a lt-tuning classifier tested on a LongTailedDataModule; no plots written.")
            return
        folder = Path(self.output_dir or log_dir(trainer))
        if not trainer.is_global_zero:
            return
        for name, figure in self.figures(datamodule, pl_module).items():
            plots.save_figure(figure, folder / name)

    def figures(self, datamodule: LongTailedDataModule, module: LongTailedClassifier) -> dict[str, Figure]:
        """The figures of ``module``'s latest test, by file name."""
        counts = datamodule.metric_class_counts or datamodule.class_counts("test")
        ratio, names, run = datamodule.head_tail_ratio, datamodule.label_names, type(module).__name__
        return dict(zip(self.FILES, (
            plots.class_distribution_figure(counts, ratio, names),
            plots.per_class_f1_figure({run: module.last_test_metrics["test/per_class_f1"]}, counts, ratio, names),
            plots.weight_norms_figure({run: module.class_weight_norms()}, counts, ratio, names),
        )))


class MaskedLMExport(Callback):
    """Save a pretrained masked LM for fine-tuning: at the end of fit, and at budgets of tokens seen.

    Each export is a ``save_pretrained`` folder (weights, config, the corpus' tokenizer) that
    ``AutoModelForMaskedLM`` and both tuning modules load with no new weights, and a
    ``pretraining_report.json``: steps, tokens seen, parameters, the corpus files with their
    sha256, and per language the held-out masked-token accuracy of the *saved* weights (reloaded
    as lt-tuning loads them) next to that language's unigram baseline.

    Args:
        output_dir: where the final model goes (None: not saved at the end).
        token_budgets: save ``budgets_dir/<budget>`` when the tokens seen first reach each
            budget; budget 0 is the random initialisation, saved when fit starts.
        budgets_dir: the budget checkpoints' folder (needed with ``token_budgets``).
        half_precision: store the weights as float16, half the bytes (lt-tuning loads them as float32).
        dropout: hidden and attention dropout written into the saved config, for fine-tuning
            (e.g. BERT's 0.1 after a pretraining without dropout); None keeps the model's own.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        token_budgets: list[int] | None = None,
        budgets_dir: str | None = None,
        half_precision: bool = False,
        dropout: float | None = None,
    ) -> None:
        if token_budgets and budgets_dir is None:
            raise ValueError("MaskedLMExport: token_budgets need a budgets_dir to save into.")
        self.output_dir = output_dir
        self.pending = sorted(token_budgets or [])
        self.budgets_dir = budgets_dir
        self.half_precision = half_precision
        self.dropout = dropout

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_reached_budgets(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self._save_reached_budgets(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output_dir is not None:
            self.export(trainer, pl_module, Path(self.output_dir))

    def _save_reached_budgets(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while self.pending and pl_module.tokens_seen >= self.pending[0]:
            self.export(trainer, pl_module, Path(self.budgets_dir) / str(self.pending.pop(0)))

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self.pending}  # a resumed run does not save budgets it already passed

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict["pending"]

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, folder: Path) -> None:
        """Save ``pl_module.model``, the DataModule's tokenizer and the report into ``folder``."""
        if not trainer.is_global_zero:
            return
        model = copy.deepcopy(pl_module.model)
        if self.dropout is not None:
            model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = self.dropout
        (model.half() if self.half_precision else model).save_pretrained(folder)
        datamodule = trainer.datamodule
        report = {"steps": trainer.global_step, "tokens_seen": pl_module.tokens_seen,
                  "parameters": sum(p.numel() for p in model.parameters())}
        if isinstance(datamodule, MaskedLMCorpusDataModule):
            datamodule.tokenizer.save_pretrained(folder)
            saved = load_masked_lm(str(folder))  # the weights as fine-tuning will see them
            for language, batches in datamodule.heldout_batches.items():
                report[f"heldout_mlm_acc_{language}"] = masked_token_accuracy(saved, batches)
                report[f"heldout_unigram_baseline_acc_{language}"] = datamodule.unigram_baseline_accuracy(language, batches)
            report["corpus"] = datamodule.sources
        atomic_write_json(folder / "pretraining_report.json", report)
