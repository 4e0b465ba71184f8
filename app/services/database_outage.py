"""A database that is down, restarting or out of reach, as one process sees it.

Reported like a Redis outage (``queues.RedisOutage``): a line when it
starts, one a minute while it lasts, one when it ends; never a traceback
per call. The pool pings each connection before use (``pool_pre_ping``), so
once the server answers again the next call works without a restart.
"""
from __future__ import annotations

from sqlalchemy import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from app.services.queues import RedisOutage

# What a database that is down or restarting raises (SQLAlchemy wraps the
# driver's error; a connection cut mid-statement is an OperationalError too).
UNREACHABLE = (OperationalError, InterfaceError)


class DatabaseOutage(RedisOutage):
    """The same reporting as a Redis outage, naming the database."""

    def __init__(self, process: str, database_url: str, **kwargs):
        super().__init__(process, **kwargs)
        self.database = make_url(database_url).render_as_string(hide_password=True)

    def subject(self) -> str:
        """The database, without its password."""
        return f"the database at {self.database}"
