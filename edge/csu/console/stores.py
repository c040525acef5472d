"""Where the console's state lives, chosen once from ``storage`` when the store is made: the
operators' SQLite database (``operators_db``, embedded mode) or the cluster's PostgreSQL
database (:mod:`.pgconsole`, cluster mode). The web routes and ``edge-csu operator`` hold an
:class:`.accounts.OperatorStore` and a :class:`.alerts.DecisionLog` either way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .accounts import OperatorStore
from .alerts import DecisionLog, SqliteDecisions

if TYPE_CHECKING:
    from ..receiver.settings import ServeConfig


def operator_store(cfg: ServeConfig, intake: object = None) -> OperatorStore:
    """Accounts and sessions. ``intake``: the receiver's store (cluster mode: its database
    connections are used); none for a command line (a connection of its own)."""
    if cfg.storage != "cluster":
        return OperatorStore(cfg.operators_db)
    from . import pgconsole

    return pgconsole.PgOperatorStore(pgconsole.database(cfg, intake))


def decision_log(cfg: ServeConfig, intake: object = None) -> DecisionLog:
    """The alert decisions (``intake`` as for :func:`operator_store`)."""
    if cfg.storage != "cluster":
        return SqliteDecisions(cfg.operators_db)
    from . import pgconsole

    return pgconsole.PgDecisions(pgconsole.database(cfg, intake))
