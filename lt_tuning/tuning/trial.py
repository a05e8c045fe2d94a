"""A trial: the CLI's own ``fit`` that also reads a ``tune:`` section, with the trial's values as
overrides, reporting each validation to Optuna."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import optuna
from pytorch_lightning import Callback, LightningModule, Trainer

from lt_tuning.commands.lightning import LTTuningCLI, build_cli
from lt_tuning.tuning.space import SearchSpaceError, TuneSettings


class TrialFailed(Exception):
    """A trial's fit raised (or gave no finite dev metric): that trial fails, the study goes on."""


class TuneCLI(LTTuningCLI):
    """The ``lt-tuning`` CLI that also reads a ``tune:`` section; with ``trial``, its fit reports to it."""

    def __init__(self, *args: Any, trial: optuna.Trial | None = None, **kwargs: Any) -> None:
        self.trial = trial
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(TuneSettings, "tune")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if self.trial is not None:
            settings = self.config[self.subcommand].tune
            trainer.callbacks.append(OptunaTrialReport(self.trial, settings.objective))
        return trainer


class ParsedConfig(TuneCLI):
    """Only parses the arguments (``run=False``): the config a trial would get, with no model built."""

    model_optional = False

    def init_parser(self, **kwargs: Any) -> Any:
        description = sys.modules[__package__].__doc__.split("\n\n")[0]  # lt_tuning.tuning's first paragraph
        return super().init_parser(**{**kwargs, "prog": "lt-tuning tune", "description": description})

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        if self.model_optional:  # the `tune:` section alone, before a method config gives the model
            parser.set_defaults({"model": {"class_path": "lt_tuning.models.base.LongTailedClassifier"}})

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def parse_config(args: list[str], model_optional: bool = False) -> Any:
    """The parsed config (a jsonargparse Namespace) of ``fit`` on ``args``, without building
    anything; ``model_optional``: also where no model is given (to read the ``tune:`` section)."""
    cli_class = type("ParsedTuneSection", (ParsedConfig,), {"model_optional": True}) if model_optional else ParsedConfig
    return build_cli(args, run=False, cli_class=cli_class).config


class OptunaTrialReport(Callback):
    """Reports each validation's objective to the trial and prunes a hopeless one; fails on a
    non-finite training loss; refuses an objective the module does not log (after the sanity
    check, before any training step)."""

    def __init__(self, trial: optuna.Trial, objective: str) -> None:
        self.trial, self.objective = trial, objective

    def _value(self, trainer: Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.objective not in metrics:
            logged = sorted(name for name in metrics if not name.startswith("train/")) or "nothing (no dev split?)"
            raise SearchSpaceError(f"tune.objective={self.objective!r} is not logged by the module; it logs: "
                                   f"{logged}. Set --tune.objective to one of them.")
        return float(metrics[self.objective])

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._value(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(f"the training loss is {float(loss)} at step {trainer.global_step}")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = self._value(trainer)
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.objective}={value:.4f} at step {trainer.global_step}")

def trial_overrides(settings: TuneSettings, run_dir: Path) -> list[str]:
    """What a trial changes in ``fit``: its own folder, no test, no last.ckpt (a rerun starts
    afresh), and the best checkpoint (and early stopping) by the objective."""
    mode = "max" if settings.direction == "maximize" else "min"
    return ["--test_after_fit=false", f"--trainer.default_root_dir={run_dir}", "--last_checkpoint.save_last=false",
            f"--checkpoint.monitor={settings.objective}", f"--checkpoint.mode={mode}",
            f"--early_stopping.monitor={settings.objective}", f"--early_stopping.mode={mode}"]


# Keys of trial_overrides that best.yaml gives back their user's value (the rest define "best").
BOOKKEEPING = ("test_after_fit", "trainer.default_root_dir", "last_checkpoint.save_last")
