"""``lt-tuning tune``: search a method and its settings for your data (see :mod:`lt_tuning.tuning`).

``lt-tuning tune --config examples/data/cmid.yaml --config examples/tune/cmid.yaml`` runs this
process as one worker of the study in ``tune.output_dir`` (resumed if it exists); start the same
command several times, or on several machines with ``--tune.storage postgresql://...``.
"""

from __future__ import annotations


def main(args: list[str]) -> None:
    """Run one worker of the study that ``args`` (``fit``'s, plus a ``tune:`` section) describe."""
    import sys

    from lt_tuning.commands.lightning import quiet_lightning
    from lt_tuning.tuning import tune

    with quiet_lightning(sys.argv[:1]):  # each trial's CLI gets its arguments, not the command line's
        tune(args)
