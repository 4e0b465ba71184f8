# The monitor as one image: every process of the Procfile runs from it.
# Default command: the whole instance in one container (`python -m app start`:
# web, sync API, workers, clock and an embedded Redis, SQLite in /data).
# deploy/compose/ runs the processes as separate services instead.
#
#   docker build -t endpoint-monitor .
#   docker run -p 3001:3001 -v monitor-data:/data endpoint-monitor
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=3001 \
    SYNC_API_PORT=3002 \
    DATA_DIR=/data

# A fixed uid, so a bind-mounted data directory can be given to it (chown 10001).
RUN groupadd --system --gid 10001 monitor \
    && useradd --system --uid 10001 --gid monitor --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin monitor

WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-compile -r requirements.txt

# Front-end packages from the npm registry, pinned and hash-checked; fetched
# here at build time, so the running container needs no network for them.
COPY app/static/vendor.py app/static/vendor.py
RUN python app/static/vendor.py

# The code belongs to root and is only read by the monitor's user.
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY wsgi.py gunicorn.conf.py Procfile ./

RUN mkdir -p /data && chown monitor:monitor /data
VOLUME ["/data"]
USER monitor

EXPOSE 3001 3002

# Ready: database, Redis, the clock's lease and a worker (docs/operations.md,
# "Health and readiness"). A container running one process of the Procfile
# (worker, clock) answers no HTTP: compose files override or disable this.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '3001'), timeout=8)"]

CMD ["python", "-m", "app", "start"]
