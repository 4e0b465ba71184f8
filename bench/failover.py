"""Failover: seconds from the primary's death to a new primary accepting results.

Three real process trees on loopback (``python -m app start``, each with its
own ``DATA_DIR`` under a temporary directory, SQLite, embedded Redis):

    p  the first primary (ENABLE_SYNC_API=true), failover order 3
    a  dependent, failover order 1 (the first candidate)
    b  dependent, failover order 2

Every failover and sync setting is the product's default
(FAILOVER_CHECK_INTERVAL 3 s, FAILOVER_MAX_FAILURES 3, HEARTBEAT_INTERVAL
10 s, SYNC_INTERVAL 30 s, CONNECTION_TIMEOUT 10 s, WEB_CONCURRENCY and
WORKER_PROCESSES 1; 2 before 2026-12-05), unless ``--heartbeat-interval`` says otherwise, and the
output says which heartbeat interval was used. One http endpoint (5 s
interval) against an HTTP server on 127.0.0.1 that the benchmark serves.

Each run starts from a steady cluster (one primary, both others following it
at its epoch, registered, caught up, their results arriving):

1. SIGKILL the primary's whole process tree (as a crash would) and note
   the time.
2. Every 0.2 s read each survivor's SQLite (read-only): "promoted" is the
   first poll where one holds role ``primary`` at a higher epoch;
   "accepting" is the first poll where that one also stores a result made
   by the other survivor with ``checked_at`` after the kill.
3. Restart the killed instance with its original environment; it must
   rejoin as a dependent of the new primary (role ``dependent``,
   ``primary_url`` the new primary's sync URL), register and catch it up
   before the next run kills the new primary.

A run whose new primary does not accept results within 120 s is reported as
failed; a cluster that does not settle again stops the benchmark (cleanly:
every process it started is stopped, and leftovers are looked for).

    .venv/bin/python bench/failover.py
    .venv/bin/python -m bench.failover --runs 10
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (bench/failover.py) as well as with -m
    sys.path.insert(0, str(ROOT))

import requests

from app.services.sync.dependent import (
    CAUGHT_UP_EPOCH,
    REGISTERED_WITH,
    TOKEN_REFUSED_AT,
)
from bench.scratch import busy_percent, cpu_ticks
from tests.peers.cluster import JOIN_SECRET, Instance
from tests.peers.process import ADMIN, monitor_env

RESULTS_DIR = ROOT / "bench" / "results"
GOAL_SECONDS = 30.0
RUN_TIMEOUT = 120.0
SETTLE_TIMEOUT = 180.0
POLL_SECONDS = 0.2
CHECK_INTERVAL = 5
ORDERS = {"p": 3, "a": 1, "b": 2}
LOCATIONS = {"p": "paris", "a": "amsterdam", "b": "berlin"}
DEFAULT_HEARTBEAT_INTERVAL = 10  # app/config.py
JSON = {"Content-Type": "application/json"}


class BenchFailed(Exception):
    """The cluster did not get where the benchmark needs it, in time."""


# --- the monitored site ----------------------------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Target:
    """An HTTP server on 127.0.0.1 (port chosen by the kernel) answering 200."""

    def __init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/ok"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- reading an instance's database ----------------------------------------------------


def read(instance: Instance, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the instance's SQLite read-only, as ``Instance.query`` does, but
    waiting at most 5 s for its writers, so a poll stays within the run's bound."""
    uri = f"file:{instance.data_dir / 'monitor.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return conn.execute(sql, params).fetchall()


STATE_KEYS = ("instance_id", "role", "epoch", "primary_url", CAUGHT_UP_EPOCH, REGISTERED_WITH, TOKEN_REFUSED_AT)


def state(instance: Instance) -> dict[str, str]:
    """The instance's cluster state as its own database holds it."""
    return dict(read(instance, f"SELECT key, value FROM instance_config WHERE key IN "
                               f"({', '.join('?' * len(STATE_KEYS))}) AND value IS NOT NULL", STATE_KEYS))


def db_time(moment: float) -> str:
    """A Unix time as the monitor stores timestamps in SQLite (naive UTC)."""
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def unix_time(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp()


def results_from(holder: Instance, maker_id: str, since: float) -> int:
    """Results made by ``maker_id`` with ``checked_at`` after ``since`` that ``holder`` stores."""
    return read(holder, "SELECT COUNT(*) FROM response_times WHERE instance_id = ? AND checked_at > ?",
                (maker_id, db_time(since)))[0][0]


def backlog(instance: Instance, older_than: float) -> int:
    """Results waiting to be sent that were made before ``older_than``."""
    return read(instance, "SELECT COUNT(*) FROM response_times WHERE synced_at IS NULL AND checked_at < ?",
                (db_time(older_than),))[0][0]


def event_time(instance: Instance, kind: str, epoch: int, since: float) -> float | None:
    """When ``instance`` recorded its first ``kind`` event at ``epoch`` after ``since``."""
    rows = read(instance, "SELECT MIN(at) FROM cluster_events WHERE kind = ? AND epoch = ? AND at > ?",
                (kind, epoch, db_time(since)))
    return unix_time(rows[0][0]) if rows and rows[0][0] else None


def events_since(instance: Instance, since: float) -> list[str]:
    return [f"{kind}@{epoch}" for kind, epoch in read(
        instance, "SELECT kind, epoch FROM cluster_events WHERE at > ? ORDER BY id", (db_time(since),))]


def poll(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate`` until truthy (a busy or half-made database counts as
    "not yet"); raise BenchFailed naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (sqlite3.Error, requests.RequestException, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise BenchFailed(f"{what} (waited {timeout:g} s; last error: {last_error})")
        time.sleep(interval)


# --- the cluster -----------------------------------------------------------------------


class Cluster:
    """p, a and b as real process trees, and who is the primary now."""

    def __init__(self, root: Path, heartbeat_interval: int | None):
        self.heartbeat = heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        extra = {} if heartbeat_interval is None else {"HEARTBEAT_INTERVAL": heartbeat_interval}
        self.members: dict[str, Instance] = {}
        p = self._member(root, "p", ENABLE_SYNC_API="true", **extra)
        for name in ("a", "b"):
            self._member(root, name, PRIMARY_SYNC_URL=p.sync, **extra)
        self.primary = p
        self.epoch = 0
        self.ids: dict[str, str] = {}

    def _member(self, root: Path, name: str, **settings) -> Instance:
        data_dir = root / name
        data_dir.mkdir(parents=True)
        env = monitor_env(data_dir, admin=ADMIN, INSTANCE_NAME=name, INSTANCE_LOCATION=LOCATIONS[name],
                          SYNC_SHARED_SECRET=JOIN_SECRET, FAILOVER_ORDER=ORDERS[name], LOG_LEVEL="INFO",
                          **settings)
        instance = Instance(name, data_dir, env)
        env["PUBLIC_SYNC_URL"] = instance.sync
        self.members[name] = instance
        return instance

    def others(self, instance: Instance) -> list[Instance]:
        return [m for m in self.members.values() if m is not instance]

    def start(self, endpoint_url: str) -> None:
        """Start p, then a and b; make the endpoint on p once both are
        registered, and wait until both hold what a primary needs."""
        p, a, b = (self.members[n] for n in "pab")
        p.start()
        a.launch()
        b.launch()
        a.wait_started()
        b.wait_started()
        for name, member in self.members.items():
            self.ids[name] = poll(lambda m=member: state(m).get("instance_id"), 30, f"{name} has no instance id")
        poll(lambda: read(p, "SELECT COUNT(*) FROM monitoring_instances")[0][0] == 3, 120,
             "a and b did not both register with p")
        created = requests.post(f"{p.web}/api/v1/endpoints", auth=ADMIN, headers=JSON, timeout=30, json={
            "name": "loopback target", "checkType": "http", "target": endpoint_url,
            "intervalSeconds": CHECK_INTERVAL, "timeoutSeconds": 2})
        if created.status_code != 201:
            raise BenchFailed(f"could not create the endpoint on p: {created.status_code} {created.text}")
        for member in (a, b):
            poll(lambda m=member: read(m, "SELECT COUNT(*) FROM endpoints")[0][0] == 1
                 and read(m, "SELECT COUNT(*) FROM users")[0][0] >= 1
                 and read(m, "SELECT COUNT(*) FROM monitoring_instances")[0][0] == 3, 120,
                 f"{member.name} never received the whole configuration")

    def settled(self, since: float) -> bool:
        """One primary at ``self.epoch``; the others follow it, registered
        with it and caught up; everyone's results made after ``since``, and
        none older than a heartbeat and a check waiting to be sent."""
        current = state(self.primary)
        if current["role"] != "primary" or int(current["epoch"]) != self.epoch:
            return False
        stale = time.time() - (self.heartbeat + CHECK_INTERVAL + 5)
        for member in self.others(self.primary):
            seen = state(member)
            if not (seen["role"] == "dependent" and int(seen["epoch"]) == self.epoch
                    and seen.get("primary_url") == self.primary.sync
                    and seen.get(REGISTERED_WITH) == self.primary.sync and not seen.get(TOKEN_REFUSED_AT)
                    and int(seen.get(CAUGHT_UP_EPOCH, "-1")) >= self.epoch
                    and backlog(member, stale) == 0):
                return False
        return all(results_from(self.primary, self.ids[name], since) for name in self.members)

    def stop(self) -> list[int]:
        """Stop every member (SIGTERM all first, then wait); the pids of any
        process that outlived it."""
        for member in self.members.values():
            member.terminate()
        for member in self.members.values():
            member.stop()
        return [proc.pid for member in self.members.values() for proc in member.leftovers()]


# --- one run ---------------------------------------------------------------------------


def failover_run(cluster: Cluster, number: int, runs: list[dict]) -> dict:
    """Kill the primary, time its replacement (appended to ``runs`` at once,
    so a failure afterwards keeps it), restart it and let the cluster settle."""
    victim, old_epoch = cluster.primary, cluster.epoch
    survivors = cluster.others(victim)
    run = {"run": number, "killed": victim.name, "killed_epoch": old_epoch, "promoted_s": None,
           "accepting_s": None, "new_primary": None, "epoch": None, "ok": False}

    killed_at = time.time()
    started = time.monotonic()
    victim.kill()
    new_primary, also_primary = None, set()
    while time.monotonic() - started < RUN_TIMEOUT:
        polled = time.monotonic()
        for survivor in survivors:
            try:
                seen = state(survivor)
                if seen["role"] != "primary" or int(seen["epoch"]) <= old_epoch:
                    continue
                if new_primary is None:
                    new_primary, run["epoch"] = survivor, int(seen["epoch"])
                    run["new_primary"] = survivor.name
                    run["promoted_s"] = round(time.monotonic() - started, 2)
                elif survivor is not new_primary:
                    also_primary.add(survivor.name)
                if survivor is new_primary:
                    other = next(s for s in survivors if s is not survivor)
                    if results_from(survivor, cluster.ids[other.name], killed_at):
                        run["accepting_s"] = round(time.monotonic() - started, 2)
            except (sqlite3.Error, KeyError, ValueError):
                continue  # busy, or a write half-way: the next poll
        if run["accepting_s"] is not None:
            break
        time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - polled)))
    if also_primary:
        run["odd"] = f"{', '.join(sorted(also_primary))} also held role primary at a newer epoch"

    if new_primary is not None:
        # Where the time went, from the new primary's own history (its clock).
        for kind, key in (("suspect", "suspected_s"), ("promote", "promote_event_s")):
            at = event_time(new_primary, kind, old_epoch if kind == "suspect" else run["epoch"], killed_at)
            run[key] = round(at - killed_at, 2) if at else None
        cluster.primary, cluster.epoch = new_primary, run["epoch"]
    run["ok"] = run["accepting_s"] is not None
    if not run["ok"]:
        run["error"] = (f"no new primary within {RUN_TIMEOUT:g} s" if new_primary is None else
                        f"{new_primary.name} promoted but stored no result from the other survivor within "
                        f"{RUN_TIMEOUT:g} s")
        print(f"run {number}: FAILED: {run['error']}; logs in {victim.log.parent}", file=sys.stderr)
    runs.append(run)
    print(f"run {number}: killed {run['killed']}, {run['new_primary']} primary at epoch {run['epoch']}: "
          f"promoted {run['promoted_s']} s, accepting {run['accepting_s']} s after the kill; restarting "
          f"{victim.name}", file=sys.stderr)

    # The killed instance comes back as it was; it must rejoin as a dependent.
    restarted = time.time()
    victim.start()
    if new_primary is not None:
        poll(lambda: (s := state(victim))["role"] == "dependent" and int(s["epoch"]) == cluster.epoch
             and s.get("primary_url") == new_primary.sync, 60,
             f"{victim.name} restarted as it was did not rejoin as a dependent of {new_primary.name}")
        run["rejoined_s"] = round(time.time() - restarted, 1)
        run["rejoin_events"] = events_since(victim, restarted - 1)
    poll(lambda: cluster.settled(restarted), SETTLE_TIMEOUT,
         f"the cluster did not settle after run {number} (primary {cluster.primary.name}, epoch {cluster.epoch})")
    run["settled_s"] = round(time.time() - restarted, 1)
    return run


# --- report ----------------------------------------------------------------------------


def summary(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "median": round(statistics.median(values), 2), "max": max(values)}


def print_table(runs: list[dict], figures: dict) -> None:
    def cell(value, width):
        return f"{'-' if value is None else value:>{width}}"

    print()
    print(f"heartbeat interval {figures['heartbeat_interval_s']} s ({figures['heartbeat_interval_source']}), "
          f"FAILOVER_CHECK_INTERVAL 3 s, FAILOVER_MAX_FAILURES 3 (defaults), endpoint every {CHECK_INTERVAL} s")
    print(f"{'run':>3}  {'killed':>6}  {'suspected s':>11}  {'promoted s':>10}  {'accepting s':>11}  "
          f"{'new primary':>11}  {'epoch':>5}  {'rejoined s':>10}  {'settled s':>9}")
    for run in runs:
        print(f"{run['run']:>3}  {run['killed']:>6}  {cell(run.get('suspected_s'), 11)}  "
              f"{cell(run['promoted_s'], 10)}  {cell(run['accepting_s'], 11)}  {cell(run['new_primary'], 11)}  "
              f"{cell(run['epoch'], 5)}  {cell(run.get('rejoined_s'), 10)}  {cell(run.get('settled_s'), 9)}"
              + ("" if run["ok"] else f"  FAILED: {run.get('error', '')}")
              + (f"  ODD: {run['odd']}" if run.get("odd") else ""))
    for label, key in (("promoted", "promoted_s"), ("accepting results", "accepting_s")):
        s = figures[key]
        print(f"{label}: " + (f"min {s['min']} s, median {s['median']} s, max {s['max']} s" if s else "no run"))
    print(f"{figures['verdict']}: {figures['verdict_reason']}")


def _interrupted(signum, frame):
    # SIGTERM ends the benchmark through its finally, as Ctrl-C does.
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="failovers to time (default 5, at least 5 for the goal)")
    parser.add_argument("--heartbeat-interval", type=int, default=None,
                        help=f"HEARTBEAT_INTERVAL of every member (default: unset, the product's "
                             f"{DEFAULT_HEARTBEAT_INTERVAL} s)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/failover.json, "
                                                                 "failover-hb<N>.json with --heartbeat-interval)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    signal.signal(signal.SIGTERM, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    target = Target()
    cluster = Cluster(workdir, args.heartbeat_interval)
    runs: list[dict] = []
    stopped_because = None
    leftovers: list[int] = []
    machine_before = cpu_ticks()
    began = datetime.now(timezone.utc)
    try:
        print(f"starting p, a, b in {workdir} (heartbeat interval {cluster.heartbeat} s)", file=sys.stderr)
        cluster.start(target.url)
        steady_from = time.time()
        poll(lambda: cluster.settled(steady_from), SETTLE_TIMEOUT, "the new cluster did not settle")
        print("cluster steady; runs begin", file=sys.stderr)
        for number in range(1, args.runs + 1):
            try:
                failover_run(cluster, number, runs)
            except (BenchFailed, AssertionError) as exc:  # AssertionError: a restart that never answered
                stopped_because = str(exc)
                print(f"stopping: {exc}", file=sys.stderr)
                break
    except (BenchFailed, AssertionError) as exc:
        stopped_because = str(exc)
        print(f"stopping: {exc}", file=sys.stderr)
    finally:
        leftovers = cluster.stop()
        target.stop()

    accepting = [r["accepting_s"] for r in runs if r["accepting_s"] is not None]
    failed = [r["run"] for r in runs if not r["ok"]]
    over_goal = [r["run"] for r in runs if r["ok"] and r["accepting_s"] > GOAL_SECONDS]
    if stopped_because or len(runs) < args.runs:
        verdict, reason = "FAIL", f"{len(runs)} of {args.runs} runs done: {stopped_because}"
    elif failed:
        verdict, reason = "FAIL", f"runs {failed} did not accept results within {RUN_TIMEOUT:g} s"
    elif over_goal:
        verdict, reason = "FAIL", f"runs {over_goal} took over {GOAL_SECONDS:g} s to accept results"
    else:
        verdict, reason = "PASS", (f"every one of {len(runs)} runs accepted results within {GOAL_SECONDS:g} s "
                                   f"(max {max(accepting)} s)")
    figures = {
        "runs": runs,
        "promoted_s": summary([r["promoted_s"] for r in runs if r["promoted_s"] is not None]),
        "accepting_s": summary(accepting),
        "goal_s": GOAL_SECONDS,
        "verdict": verdict,
        "verdict_reason": reason,
        "heartbeat_interval_s": cluster.heartbeat,
        "heartbeat_interval_source": "product default" if args.heartbeat_interval is None else "--heartbeat-interval",
        "failover_check_interval_s": 3,
        "failover_max_failures": 3,
        "endpoint_interval_s": CHECK_INTERVAL,
        "leftover_pids": leftovers,
        "started_at": began.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "machine_busy_percent": busy_percent(machine_before, cpu_ticks()),
        "load_average": os.getloadavg(),
    }
    print_table(runs, figures)
    if leftovers:
        print(f"processes outlived the cluster: {leftovers}", file=sys.stderr)
    output = args.output or RESULTS_DIR / ("failover.json" if args.heartbeat_interval is None
                                           else f"failover-hb{args.heartbeat_interval}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"JSON in {output}", file=sys.stderr)
    if args.keep or verdict == "FAIL":
        print(f"data directories and logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if verdict == "PASS" and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
