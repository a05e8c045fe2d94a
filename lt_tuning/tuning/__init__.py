"""Search a method and its settings for your data: each trial one ``lt-tuning fit``, on Optuna.

``tune(args)`` is ``lt-tuning tune args``: the arguments of ``fit`` plus a ``tune:`` section
(:class:`TuneSettings`). Every trial is the CLI's own ``fit`` (:func:`~lt_tuning.commands.lightning.build_cli`)
with the trial's values as overrides and without the test; each validation reports the objective
to Optuna, whose pruner may stop the trial. The study lives in a database (SQLite in the output
folder by default, PostgreSQL for many machines): any number of workers run the same command,
a rerun resumes, and a killed worker's trial (stale heartbeat) is run again. When no trial is
left, the worker that finished last writes the report (:func:`write_report`): ``best.yaml``,
the best trial's test, ``trials.csv``/``trials.md`` and Optuna's figures.
"""

from __future__ import annotations

from lt_tuning.tuning.space import SearchSpace, TuneSettings
from lt_tuning.tuning.storage import masked, open_storage
from lt_tuning.tuning.study import Tuner, tune
from lt_tuning.tuning.report import write_report

__all__ = ["SearchSpace", "TuneSettings", "Tuner", "masked", "open_storage", "tune", "write_report"]
