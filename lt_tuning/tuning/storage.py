"""The study's database: SQLite (serialized) or PostgreSQL, with heartbeats; a URL shown with
its password masked."""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna


def _parsed_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        return None


def masked(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    parsed = _parsed_url(url)
    return parsed.render_as_string(hide_password=True) if parsed is not None else url


def _serialize_sqlite(engine: Any) -> None:
    """Every SQLite transaction ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe): SQLite ignores Optuna's
    ``SELECT ... FOR UPDATE``, so two workers could both take the same waiting trial (a retry, an
    enqueued one) between reading and writing it; serialized, the second sees it taken."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are not reused


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    """The study database, with heartbeats: a trial silent for two intervals is failed and
    enqueued again (up to 3 times). Refuses an unreachable URL, the password masked."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except (SQLAlchemyError, ImportError) as error:  # Optuna raises ImportError for a missing driver
            # Workers started together race to create the tables: the loser retries.
            if attempt < 2 and (isinstance(error, IntegrityError) or "already exists" in str(error)):
                time.sleep(1 + attempt)
                continue
            failure = error
            break
    reason = str(failure).splitlines()[0]
    password = getattr(_parsed_url(url), "password", None)
    if password:
        reason = reason.replace(password, "***")
    hint = " Install the driver: pip install 'lt-tuning[postgres]'." if isinstance(failure, ImportError) else ""
    raise ValueError(f"cannot reach the study storage {masked(url)}: {reason}.{hint}") from None
