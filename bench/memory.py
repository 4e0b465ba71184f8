"""Memory of the whole embedded instance: proportional set size (PSS) of every process.

    .venv/bin/python -m bench.memory --endpoints 1000 --interval 60

What a user meets after ``./monitor start``: the real ``python -m app
start`` tree with its defaults (SQLite, embedded Redis, no process
setting), in a temporary ``DATA_DIR``.

1. Starts a loopback HTTP target in its own process (``bench.checks``'s;
   its memory is not counted: it stands for the monitored sites).
2. Migrates a fresh data directory (``python -m app init``) and starts the
   tree. State **idle**: no endpoints, fresh start, once ``/readyz`` says
   ready and ``--settle`` seconds more have passed, sampled for 10 s.
3. Adds ``--endpoints`` http endpoints at ``--interval`` against the target
   to the running instance (``bench.checks``'s seeding), waits for the
   first result and then one whole interval, so every endpoint has been
   checked. State **steady**: for ``--window`` seconds (default one
   interval) the PSS of every process is read every ``SAMPLE_SECONDS``
   and the results stored in that window counted.
4. State **browsed**: as a person with the UI open, signs in, opens the
   dashboard, the map, an endpoint's page and the instances page, then
   polls the dashboard every 5 s (as its page does) for ``--window``
   seconds; then samples for 10 s more.
5. Stops the tree with SIGTERM (anything left is killed by pid).

PSS is read from ``/proc/PID/smaps_rollup`` for the launcher and all its
descendants (the server of the web UI and sync API with its workers, the
RQ workers, the clock, the embedded redis-server). A page shared by k
processes counts 1/k in each, so the sum is what the instance costs the
machine. The figure is the largest total seen in a state's samples; each
process's row is from that sample.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from bench import checks
from bench.checks import ROOT, Tree, count_results, free_port, stop_process, wait_listening

RESULTS_DIR = ROOT / "bench" / "results"
SAMPLE_SECONDS = 5.0
IDLE_SECONDS = 10.0  # the idle state is sampled this long
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
BUDGET_MB = 200.0
ADMIN = ("bench@example.com", "bench-memory-password")
PAGES = ("/", "/map", "/endpoints/1", "/instances")
DASHBOARD_REFRESH_SECONDS = 5.0  # app.blueprints.ui.views.REFRESH_SECONDS
_POLL_URL = re.compile(r'id="dashboard-poll"[^>]*?hx-get="([^"]+)"')
# smaps_rollup fields kept per process (kB in the file).
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty", "Swap", "SwapPss")


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """The memory totals of one process, in bytes (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            found[name] = int(rest.split()[0]) * 1024
    return found


def sample(tree: Tree) -> dict:
    """PSS of every process of the instance now."""
    rows = []
    for pid, proc in sorted(tree.processes().items()):
        memory = smaps_rollup(pid)
        if memory is None:
            continue
        try:
            cpu = proc.cpu_times()
            cpu_seconds = cpu.user + cpu.system
        except psutil.Error:
            cpu_seconds = None
        rows.append({"pid": pid, "role": tree.roles.get(pid, "?"),
                     "pssMB": _mb(memory.get("Pss", 0) + memory.get("SwapPss", 0)),
                     "rssMB": _mb(memory.get("Rss", 0)),
                     "privateMB": _mb(memory.get("Private_Clean", 0) + memory.get("Private_Dirty", 0)),
                     "swapMB": _mb(memory.get("Swap", 0)), "cpuSeconds": cpu_seconds})
    return {"at": time.time(), "totalPssMB": round(sum(r["pssMB"] for r in rows), 1), "processes": rows}


def _mb(value: int) -> float:
    return round(value / 2**20, 1)


def measure(tree: Tree, seconds: float) -> dict:
    """Samples over ``seconds``: the largest total, with its rows, and the
    instance's CPU time and the machine's load over the same span."""
    samples = []
    machine_start = psutil.cpu_times()
    started = time.time()
    cpu_start = _instance_cpu(tree)
    for n in range(int(seconds // SAMPLE_SECONDS) + 1):
        if n:
            time.sleep(SAMPLE_SECONDS)
        samples.append(sample(tree))
    wall = time.time() - started
    peak = max(samples, key=lambda s: s["totalPssMB"])
    return {"windowSeconds": round(wall, 1), "samples": len(samples),
            "totalPssMB": peak["totalPssMB"], "lastTotalPssMB": samples[-1]["totalPssMB"],
            "minTotalPssMB": min(s["totalPssMB"] for s in samples),
            "processes": peak["processes"],
            "instanceCpuSeconds": round(_instance_cpu(tree) - cpu_start, 2),
            "machineBusyPercent": checks._busy(machine_start, psutil.cpu_times()),
            "loadAverage": round(os.getloadavg()[0], 2)}


def _instance_cpu(tree: Tree) -> float:
    total = 0.0
    for proc in tree.processes().values():
        seconds = checks.cpu_seconds(proc)
        total += seconds or 0.0
    return total


def results_between(db_path: Path, t0: float, t1: float) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM response_times WHERE checked_at >= ? AND checked_at < ?",
                           (checks._db_time(t0), checks._db_time(t1))).fetchone()[0]
    finally:
        con.close()


def instance_env(data_dir: Path, log_level: str) -> dict[str, str]:
    """The environment of a default ``./monitor start``: free ports, no
    process settings, no Redis or database URL."""
    env = {k: v for k, v in os.environ.items()
           if k not in checks._INHERITED_SETTINGS and k not in ("WORKER_PROCESSES", "WEB_CONCURRENCY")}
    env.update({"DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(free_port()),
                "SYNC_API_PORT": str(free_port()), "LOG_LEVEL": log_level, "PYTHONUNBUFFERED": "1",
                "ADMIN_EMAIL": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1]})
    return env


def browse(base: str, seconds: float) -> dict:
    """Sign in, open each of ``PAGES``, then poll the dashboard as its page
    does for ``seconds``; returns the status codes seen."""
    session = requests.Session()
    seen: dict[str, int] = {}
    form = session.get(f"{base}/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    dashboard = session.post(f"{base}/login", data={"csrf_token": token, "email": ADMIN[0], "password": ADMIN[1]},
                             timeout=60)
    poll = _POLL_URL.search(dashboard.text)
    if poll is None:
        raise RuntimeError(f"no dashboard after signing in (HTTP {dashboard.status_code})")
    url = html.unescape(poll.group(1))
    for path in PAGES:
        seen[path] = session.get(base + path, timeout=60).status_code
    polls: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(DASHBOARD_REFRESH_SECONDS)
        answer = session.get(base + url, headers={"HX-Request": "true"}, timeout=30)
        polls[answer.status_code] = polls.get(answer.status_code, 0) + 1
        if answer.status_code == 200 and (poll := _POLL_URL.search(answer.text)):
            url = html.unescape(poll.group(1))
    return {"pages": seen, "dashboardPolls": polls}


def wait_ready(port: str, supervisor: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            break
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the instance never became ready; log tail:\n" + checks._tail(log_path))


def run(endpoints: int, interval: int, settle: float, window: float | None, log_level: str = "WARNING",
        keep: bool = False) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    db_path = data_dir / "monitor.db"
    env = instance_env(data_dir, log_level)
    python = sys.executable
    log_path = data_dir / "instance.log"
    target = supervisor = tree = None
    report = {"command": " ".join(["python -m bench.memory", *sys.argv[1:]]) if __name__ == "__main__" else
              f"bench.memory.run(endpoints={endpoints}, interval={interval})",
              "code": checks._code_version(), "budgetMB": BUDGET_MB,
              "config": {"endpoints": endpoints, "intervalSeconds": interval, "settleSeconds": settle}}
    try:
        target_port = free_port()
        target = subprocess.Popen([python, "-m", "bench.checks", "--serve-target", str(target_port)], cwd=ROOT)
        wait_listening(target_port, 10)
        subprocess.run([python, "-m", "app", "init"], cwd=ROOT, env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)

        with open(log_path, "wb") as log:
            supervisor = subprocess.Popen([python, "-m", "app", "start"], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        tree = Tree(supervisor, data_dir)
        started = time.monotonic()
        wait_ready(env["PORT"], supervisor, log_path, START_TIMEOUT_SECONDS)
        print(f"ready in {time.monotonic() - started:.1f} s; idle for {settle:g} s", flush=True)
        time.sleep(settle)
        report["idle"] = {"state": f"idle: fresh start, no endpoints, {settle:g} s after ready",
                          **measure(tree, IDLE_SECONDS)}
        print_state(report["idle"])

        if endpoints:
            subprocess.run([python, "-m", "bench.checks", "--seed", str(endpoints),
                            f"http://127.0.0.1:{target_port}", str(interval), "2", "0"],
                           cwd=ROOT, env=env, check=True, timeout=300, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while count_results(db_path) == 0:
                if supervisor.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no result stored; log tail:\n" + checks._tail(log_path))
                time.sleep(0.5)
            print(f"{endpoints} endpoints added; first result stored; waiting one interval ({interval} s)",
                  flush=True)
            time.sleep(interval + 5)
            seconds = window if window is not None else interval
            t0 = time.time()
            steady = measure(tree, seconds)
            t1 = time.time()
            time.sleep(3)  # results of checks started in the window are stored within a second or two
            stored = results_between(db_path, t0, t1)
            report["steady"] = {
                "state": f"steady: {endpoints} http endpoints every {interval} s, every endpoint checked "
                         f"at least once, measured over the next {t1 - t0:.0f} s",
                **steady,
                "checksPerSecond": round(stored / (t1 - t0), 1),
                "expectedChecksPerSecond": round(endpoints / interval, 1),
            }
            print_state(report["steady"])

            visits = browse(f"http://127.0.0.1:{env['PORT']}", seconds)
            report["browsed"] = {
                "state": f"browsed: the same, after signing in, opening {', '.join(PAGES)} and polling the "
                         f"dashboard every {DASHBOARD_REFRESH_SECONDS:g} s for {seconds:g} s",
                **visits, **measure(tree, IDLE_SECONDS)}
            print_state(report["browsed"])
    except BaseException:
        print(f"failed; the instance's data and log stay in {data_dir}", file=sys.stderr)
        keep = True
        raise
    finally:
        if supervisor is not None:
            stop_process(supervisor, STOP_TIMEOUT_SECONDS)
        report["leftoversKilled"] = checks.kill_leftovers(tree) if tree is not None else []
        if target is not None:
            stop_process(target, 5)
        if keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return report


def print_state(state: dict) -> None:
    print(f"\n{state['state']}")
    print(f"  {'pid':>7}  {'process':<18} {'PSS MB':>7} {'RSS MB':>7} {'private MB':>10}")
    for row in sorted(state["processes"], key=lambda r: -r["pssMB"]):
        print(f"  {row['pid']:>7}  {row['role'][:18]:<18} {row['pssMB']:>7.1f} {row['rssMB']:>7.1f} "
              f"{row['privateMB']:>10.1f}")
    verdict = "PASS" if state["totalPssMB"] <= BUDGET_MB else "FAIL"
    print(f"  total PSS {state['totalPssMB']:.1f} MB over {len(state['processes'])} processes "
          f"(largest of {state['samples']} samples in {state['windowSeconds']:g} s; "
          f"smallest {state['minTotalPssMB']:.1f}): {verdict} against {BUDGET_MB:g} MB")
    if "checksPerSecond" in state:
        print(f"  checks/s {state['checksPerSecond']:g} (expected {state['expectedChecksPerSecond']:g})")
    print(f"  instance CPU {state['instanceCpuSeconds']:g} s in {state['windowSeconds']:g} s wall; machine busy "
          f"{state['machineBusyPercent']:g} %, load average {state['loadAverage']:g}", flush=True)


def figures(quick: bool = False) -> list[dict]:
    """Rows for ``bench.table``: total PSS idle, at 1,000 endpoints every
    60 s, and after using the UI, and the checks/s reached meanwhile. The
    quick run samples the steady state and polls the dashboard for 10 s
    instead of a whole interval."""
    report = run(1000, 60, settle=5 if quick else 15, window=10 if quick else None)
    idle, steady, browsed = report["idle"], report["steady"], report["browsed"]
    target = f"<= {BUDGET_MB:g} MB"
    return [
        {"figure": "memory, whole instance idle (PSS)", "target": target,
         "measured": f"{idle['totalPssMB']:.1f} MB, {len(idle['processes'])} processes",
         "passed": idle["totalPssMB"] <= BUDGET_MB},
        {"figure": "memory, whole instance, 1,000 http endpoints at 60 s (PSS)", "target": target,
         "measured": f"{steady['totalPssMB']:.1f} MB, {len(steady['processes'])} processes",
         "passed": steady["totalPssMB"] <= BUDGET_MB},
        {"figure": "memory, whole instance, 1,000 endpoints, after using the UI (PSS)", "target": target,
         "measured": f"{browsed['totalPssMB']:.1f} MB, {len(browsed['processes'])} processes",
         "passed": browsed["totalPssMB"] <= BUDGET_MB},
        {"figure": "checks/s during the memory run", "target": f">= {steady['expectedChecksPerSecond']:g} x 0.98",
         "measured": f"{steady['checksPerSecond']:g}",
         "passed": steady["checksPerSecond"] >= 0.98 * steady["expectedChecksPerSecond"]},
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000, help="http endpoints (default 1000; 0: idle only)")
    parser.add_argument("--interval", type=int, default=60, help="their check interval in seconds (default 60)")
    parser.add_argument("--settle", type=float, default=15,
                        help="seconds after ready before the idle sample (default 15)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds the steady state is sampled (default one interval)")
    parser.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of the instance (default WARNING)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/memory-<N>-i<interval>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DATA_DIR")
    args = parser.parse_args(argv)
    if args.endpoints < 0 or args.interval < 5:
        parser.error("need --endpoints >= 0 and --interval >= 5")
    report = run(args.endpoints, args.interval, args.settle, args.window, args.log_level, args.keep)
    output = args.output or RESULTS_DIR / f"memory-{args.endpoints}-i{args.interval}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
    states = (report.get("idle"), report.get("steady"), report.get("browsed"))
    return 0 if all(state["totalPssMB"] <= BUDGET_MB for state in states if state) else 1


if __name__ == "__main__":
    sys.exit(main())
