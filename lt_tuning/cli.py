"""The ``lt-tuning`` command: LightningCLI with the study's recipe as defaults.

``lt-tuning fit --config examples/data/cmid.yaml --config examples/methods/prompt_tuning.yaml``
trains, keeps the best checkpoint by dev macro F1, stops early, then tests the best checkpoint.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lt_tuning.callbacks import PredictionWriter
from lt_tuning.data import LongTailedDataModule
from lt_tuning.models import LongTailedClassifier


class LTTuningCLI(LightningCLI):
    """LightningCLI whose model gets its data-derived arguments from the DataModule."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/f1", "checkpoint.mode": "max", "checkpoint.save_last": True,
            "checkpoint.filename": "best-{step}",
        })
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        # Patience counts evaluations (every trainer.val_check_interval steps), not epochs.
        parser.set_defaults({"early_stopping.monitor": "val/f1", "early_stopping.mode": "max",
                             "early_stopping.patience": 6})
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")
        for source, target in (
            ("data.model_name_or_path", "model.init_args.model_name_or_path"),
            ("data.num_classes", "model.init_args.num_classes"),
            ("data.head_tail_ratio", "model.init_args.head_tail_ratio"),
            ("data.metric_class_counts", "model.init_args.class_counts"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")

    def after_fit(self) -> None:
        if self.config[self.subcommand].test_after_fit and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best")


def main(args: list[str] | None = None) -> LTTuningCLI:
    """Entry point of the ``lt-tuning`` console script."""
    return LTTuningCLI(
        LongTailedClassifier,
        LongTailedDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=775,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "max_epochs": 10,
            "gradient_clip_val": 1.0,
            "val_check_interval": 100,
            "check_val_every_n_epoch": None,
            "precision": "32-true",
        },
        args=args,
    )


if __name__ == "__main__":
    main()
