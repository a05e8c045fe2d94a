"""The ``lt-tuning`` command: one subcommand per job, each a module of :mod:`lt_tuning.commands`.

``lt-tuning --help`` lists them; ``lt-tuning COMMAND --help`` gives each one's options. This module
imports nothing heavy, so that a command loads only what it uses (``classify`` on an exported
folder needs neither Lightning nor the training code). Input errors print one line,
``error: <message>``, and exit 2; ``LT_TUNING_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> ("module:function" of lt_tuning.commands that runs it on the arguments, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("lightning:fit", "Train with the study's recipe, then test the best checkpoint."),
    "validate": ("lightning:validate", "Evaluate a checkpoint on the dev split."),
    "test": ("lightning:test", "Evaluate a checkpoint on the test split: acc, macro/head/tail F1."),
    "predict": ("lightning:predict", "Write a checkpoint's predictions for a dataset split (1..N processes)."),
    "classify": ("classify:main", "Classify the raw texts of a file with a trained model."),
    "export": ("export:main", "Write a checkpoint as a folder that transformers (or lt-tuning alone) loads."),
    "serve": ("serve:main", "Serve a trained classifier over HTTP (POST /predict), batching concurrent requests."),
    "tune": ("tune:main", "Search a method and its settings by dev metric (Optuna; many workers, resumable)."),
    "report": ("report:main", "Compare finished runs side by side: tail metrics, calibration, figures."),
}

# What a user's input can get wrong: shown as one line. Anything else is a bug: a traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class InputErrorExit(SystemExit):
    """Exit status 2 after an input error; its text is the line printed (``error: ...``)."""

    def __init__(self, line: str) -> None:
        super().__init__(2)
        self.line = line

    def __str__(self) -> str:
        return self.line


def parser() -> argparse.ArgumentParser:
    """The top-level parser: a command name and its arguments."""
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    top = argparse.ArgumentParser(
        prog="lt-tuning", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make pretrained language models good long-tailed learners.",
        epilog=f"commands:\n{listing}\n\n`lt-tuning COMMAND --help` lists a command's options.",
    )
    top.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    top.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return top


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lt-tuning`` console script (and ``python -m lt_tuning.cli``)."""
    args = sys.argv[1:] if args is None else list(args)
    if not args:
        parser().print_help(sys.stderr)
        sys.exit(2)
    options = parser().parse_args(args)
    module, _, function = COMMANDS[options.command][0].partition(":")
    run = getattr(importlib.import_module(f"lt_tuning.commands.{module}"), function)
    try:
        run(options.args)
    except INPUT_ERRORS as error:
        if os.environ.get("LT_TUNING_TRACEBACK"):
            raise
        line = f"error: {str(error).strip() or type(error).__name__}  (LT_TUNING_TRACEBACK=1 shows where)"
        print(line, file=sys.stderr)
        raise InputErrorExit(line) from None


if __name__ == "__main__":
    main()
