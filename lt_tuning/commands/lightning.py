"""``lt-tuning fit | validate | test | predict``: LightningCLI with the study's recipe as defaults.

``lt-tuning fit --config examples/data/cmid.yaml --config examples/methods/prompt_tuning.yaml``
trains, keeps the best checkpoint by dev macro F1, stops early, then tests the best checkpoint.
``validate``, ``test`` and ``predict`` need ``--ckpt_path`` (or ``--allow_untrained true``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_utilities.core import rank_zero
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lt_tuning import recipe
from lt_tuning.data import LongTailedDataModule
from lt_tuning.io import AtomicCheckpointIO
from lt_tuning.models import LongTailedClassifier


class LTTuningCLI(LightningCLI):
    """LightningCLI whose model gets its data-derived arguments from the DataModule.

    Runs the tuning modules on the long-tailed DataModules and masked-LM pretraining on a
    corpus DataModule; a link whose source or target a class lacks is skipped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = sys.argv[1:] if kwargs.get("args") is None else kwargs["args"]
        self.asked = argv[0] if isinstance(argv, list) and argv and argv[0] in LightningCLI.subcommands() else None
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]  # Lightning's is a staticmethod
        """Only the subcommand asked for: each one's parser takes about a second to build."""
        every = LightningCLI.subcommands()
        return {self.asked: every[self.asked]} if self.asked else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for group, (callback_class, defaults) in recipe.CALLBACKS.items():  # --checkpoint.*, --plots.* ...
            parser.add_lightning_class_args(callback_class, group)
            parser.set_defaults({f"{group}.{key}": value for key, value in defaults.items()})
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")
        parser.add_argument(
            "--allow_untrained", type=bool, default=False,
            help="validate/test/predict without --ckpt_path: the model as built, untrained (e.g. zero-shot prompts).",
        )
        for source, target in (
            ("data.model_name_or_path", "model.init_args.model_name_or_path"),
            ("data.num_classes", "model.init_args.num_classes"),
            ("data.head_tail_ratio", "model.init_args.head_tail_ratio"),
            ("data.metric_class_counts", "model.init_args.class_counts"),
            ("data.train_class_counts", "model.init_args.train_class_counts"),
            ("data.vocab_size", "model.init_args.vocab_size"),
            ("data.pad_token_id", "model.init_args.pad_token_id"),
            ("data.verbalizer", "model.init_args.verbalizer"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Refuse to evaluate an untrained model by accident: ``--ckpt_path`` or ``--allow_untrained true``."""
        if self.subcommand not in ("validate", "test", "predict"):
            return
        config = self.config[self.subcommand]
        if config.ckpt_path is None and not config.allow_untrained:
            raise ValueError(
                f"`lt-tuning {self.subcommand}` without --ckpt_path would use an untrained model. Give the "
                "checkpoint of a fit (--ckpt_path lightning_logs/version_N/checkpoints/best-step=....ckpt), or "
                "--allow_untrained true to use the model as built."
            )

    def instantiate_classes(self) -> None:
        """Also tell the DataModule the input format that the model declares (the links run
        from the DataModule to the model, so this one is set once both exist)."""
        super().instantiate_classes()
        declared = getattr(self.model, "input_format", None)
        if declared is None or not isinstance(self.datamodule, LongTailedDataModule):
            return
        if self.datamodule.input_format not in (None, declared):
            raise ValueError(
                f"data.input_format={self.datamodule.input_format!r} but {type(self.model).__name__} reads "
                f"{declared!r} batches: drop data.input_format (the model's is used)."
            )
        self.datamodule.input_format = declared

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The Trainer, writing checkpoints atomically unless given a checkpoint IO plugin of its own."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        """``--ckpt_path last`` resumes the newest ``last.ckpt`` under the log folder.

        Each run logs into a new ``version_N`` folder, where Lightning would look for
        ``last.ckpt`` in vain and silently train from scratch. Without an explicit
        ``--checkpoint.dirpath``, checkpointing goes on in the folder of the newest ``last.ckpt``.
        """
        logger = self.trainer.logger
        if self.config[self.subcommand].ckpt_path != "last" or logger is None or logger.root_dir is None:
            return
        found = sorted(Path(logger.root_dir).glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        for callback in self.trainer.checkpoint_callbacks if found else []:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(found[-1].parent)

    def after_fit(self) -> None:
        """Test the best checkpoint; where no evaluation saved one, the final weights, with a warning."""
        testable = isinstance(self.model, LongTailedClassifier)  # pretraining has no test split
        if testable and self.config[self.subcommand].test_after_fit and not self.trainer.interrupted:
            recipe.best_checkpoint_test(self.trainer, self.model, self.datamodule)


def build_cli(args: list[str] | None = None, run: bool = True,
              cli_class: Callable[..., LTTuningCLI] = LTTuningCLI) -> LTTuningCLI:
    """The ``lt-tuning`` CLI on ``args`` (default: the command line), returned for inspection;
    ``run=False`` only builds model and data (``args`` then has no subcommand). ``cli_class``:
    a subclass with more (``lt-tuning tune``'s trials)."""
    return cli_class(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=recipe.SEED,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=recipe.TRAINER,
        args=args,
        run=run,
    )


@contextmanager
def quiet_lightning(argv: list[str]) -> Iterator[None]:
    """Nothing printed that a user cannot act on; ``sys.argv`` is ``argv`` meanwhile."""
    # Lightning's own use of a torch API that torch deprecated, and its tips for a cloud service.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    rank_zero.log.addFilter(lambda record: "💡 Tip" not in record.getMessage())
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def run(subcommand: str, args: list[str]) -> None:
    """``lt-tuning <subcommand> args``, with nothing printed that a user cannot act on."""
    # Read from sys.argv (given `args` beside another sys.argv, LightningCLI warns of two sources), which
    # is also what Lightning's DDP launcher starts the other processes with.
    with quiet_lightning([sys.argv[0], subcommand, *args]):
        build_cli()


fit, validate, test, predict = (partial(run, name) for name in ("fit", "validate", "test", "predict"))
