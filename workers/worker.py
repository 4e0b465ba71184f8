"""An RQ worker on the checks, sync and notify queues.

It runs jobs in-process (``SimpleWorker``) rather than forking per job: the
app, database pool and long-lived clients (Kafka producers) are made once and
reused, and checks inside a job run on a thread pool.
"""
from __future__ import annotations

import logging

from rq import Queue, SimpleWorker


def main() -> None:
    from app.services import queues
    from workers import jobs

    app = jobs.app()  # build once, before the first job
    connection = queues.connection()
    worker = SimpleWorker([Queue(name, connection=connection) for name in queues.ALL_QUEUES],
                          connection=connection)
    level = app.config["SETTINGS"].log_level
    logging.getLogger("rq.worker").setLevel("WARNING" if level == "INFO" else level)
    worker.work(logging_level="WARNING" if level == "INFO" else level)


if __name__ == "__main__":
    main()
