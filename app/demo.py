"""``python -m app demo``: a cluster of three on this machine, to look at.

A primary and two dependents, each a real ``python -m app start`` process
tree with its own data directory and embedded Redis, listen on loopback
ports under their own names, locations and coordinates. This process serves
a small target on loopback and creates sample endpoints on the primary
through its JSON API. The target tells the locations apart by the HTTP
check's User-Agent (``endpoint-monitor/<version> (location <name>)``) and
answers 503 to one of them on one path, so that endpoint is PARTIAL within
seconds of the start.

Ctrl-C or SIGTERM stops every process tree (the launchers stop their
children and their Redis; whatever is left of a tree after that is
killed), then the target, and removes the temporary folder that held the
data and the logs.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import psutil
import requests

from app import child_processes

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_FIRST_PORT = 3001
# Each instance takes two ports in a row (web UI, sync API); a busy block is
# skipped for the next one starting PORT_STEP higher.
PORT_STEP = 10
PORT_ATTEMPTS = 100
ADMIN_EMAIL = "demo@example.org"
# Every process of the demo carries this variable, so the stop finds any
# that outlived its launcher.
MARKER = "MONITOR_DEMO_RUN"
START_TIMEOUT_SECONDS = 120.0
JOIN_TIMEOUT_SECONDS = 60.0
FIRST_RESULTS_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.3
CHECK_INTERVAL_SECONDS = 5
CHECK_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class Location:
    """One instance of the demo: where it pretends to be."""

    name: str
    location: str
    latitude: float
    longitude: float
    # Added by the target to every HTTP answer to this location, so the
    # response times look like distance.
    latency_ms: int


LOCATIONS = (
    Location("demo-frankfurt", "frankfurt", 50.11, 8.68, 15),
    Location("demo-virginia", "virginia", 38.95, -77.45, 85),
    Location("demo-singapore", "singapore", 1.29, 103.85, 160),
)
# The location the target fails, and where.
FAILING_LOCATION = "singapore"
FAILING_PATH = "/api/checkout"
_LOCATION_IN_AGENT = re.compile(r"\(location ([^)]*)\)")


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


# --- the target ------------------------------------------------------------------


class _TargetHandler(http.server.BaseHTTPRequestHandler):
    """A shop's front page and two APIs; checkout fails for one location."""

    server_version = "demo-target/1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        """Answer after the asking location's latency; 503 on the failing path to the failing location."""
        location = self._location()
        latency = next((place.latency_ms for place in LOCATIONS if place.location == location), 0)
        time.sleep(latency * random.uniform(0.7, 1.3) / 1000)
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._answer(200, "text/html", "<!doctype html><title>Demo shop</title><h1>Demo shop</h1>")
        elif path == FAILING_PATH and location == FAILING_LOCATION:
            self._answer(503, "application/json",
                         json.dumps({"error": f"checkout is unavailable in {location}"}))
        elif path == FAILING_PATH:
            self._answer(200, "application/json", json.dumps({"status": "ok"}))
        elif path == "/api/search":
            self._answer(200, "application/json", json.dumps({"status": "ok", "results": []}))
        else:
            self._answer(404, "text/plain", "not found")

    def _location(self) -> str | None:
        match = _LOCATION_IN_AGENT.search(self.headers.get("User-Agent", ""))
        return unquote(match.group(1)) if match else None

    def _answer(self, status: int, content_type: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # a request every few seconds from each location: not worth a line


class DemoTarget:
    """The endpoints' target: an HTTP server on loopback, in this process.

    It binds at once (the port is known before any instance starts) and
    serves from ``serve()`` on, in a thread.
    """

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer((HOST, 0), _TargetHandler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the kernel gave it."""
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        """Its base URL, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    def serve(self) -> None:
        """Answer requests from now on, in a thread."""
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="demo-target", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


def sample_endpoints(target: DemoTarget, with_ping: bool) -> list[dict]:
    """The endpoints the demo creates on the primary (JSON API payloads)."""
    timing = {"intervalSeconds": CHECK_INTERVAL_SECONDS, "timeoutSeconds": CHECK_TIMEOUT_SECONDS}
    endpoints = [
        {"name": "Shop front page", "checkType": "http", "target": f"{target.url}/", "group": "shop",
         "options": {"keyword": "Demo shop"}, **timing},
        {"name": "Checkout API", "checkType": "http", "target": f"{target.url}{FAILING_PATH}", "group": "shop",
         "alertOnPartial": True, **timing},
        {"name": "Search API", "checkType": "http", "target": f"{target.url}/api/search?q=demo", "group": "shop",
         **timing},
        {"name": "Shop TCP port", "checkType": "tcp", "target": HOST, "port": target.port, "group": "network",
         **timing},
    ]
    if with_ping:
        endpoints.append({"name": "Loopback ping", "checkType": "ping", "target": HOST, "group": "network",
                          "options": {"count": 2}, **timing})
    return endpoints


def ping_works() -> bool:
    """Whether this process may send ICMP echo requests (root, or
    ``net.ipv4.ping_group_range``); the instances run as the same user."""
    from app.checks import run_check

    return run_check("ping", HOST, None, 2.0, {"count": 1}).is_ok


# --- ports ----------------------------------------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_ports(first: int | None, count: int) -> list[int]:
    """``count`` free loopback ports in a row: from ``first`` when given
    (every one must be free), else from 3001, or the next free block."""
    if first is not None:
        ports = list(range(first, first + count))
        busy = [port for port in ports if not _bindable(port)]
        if busy:
            raise DemoError(f"--port {first}: {HOST} port{'s' if len(busy) > 1 else ''} "
                            f"{', '.join(map(str, busy))} {'are' if len(busy) > 1 else 'is'} in use "
                            f"(the demo needs {first} to {first + count - 1}); choose another --port, "
                            "or leave it out to take the first free block from 3001")
        return ports
    for attempt in range(PORT_ATTEMPTS):
        start = DEFAULT_FIRST_PORT + attempt * PORT_STEP
        ports = list(range(start, start + count))
        if all(_bindable(port) for port in ports):
            return ports
    last = DEFAULT_FIRST_PORT + (PORT_ATTEMPTS - 1) * PORT_STEP
    raise DemoError(f"no {count} free ports in a row on {HOST} from {DEFAULT_FIRST_PORT} to {last + count - 1}; "
                    "free some, or choose a first port with --port")


# --- the instances ------------------------------------------------------------------


@dataclass
class Instance:
    """One ``python -m app start`` process tree of the demo."""

    place: Location
    role: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    exit_reported: bool = False

    @property
    def web(self) -> str:
        """Its web UI and JSON API."""
        return f"http://{HOST}:{self.env['PORT']}"

    @property
    def sync(self) -> str:
        """Its sync API."""
        return f"http://{HOST}:{self.env['SYNC_API_PORT']}"

    def launch(self) -> None:
        """Start the tree in a session of its own, so the terminal's Ctrl-C
        reaches only the demo, which stops the trees in order. It gets
        SIGTERM if the demo dies (``child_processes``)."""
        with open(self.log, "ab") as handle:
            self.process = child_processes.popen(
                [sys.executable, "-m", "app", "start"], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()

    def exit_code(self) -> int | None:
        """The launcher's exit code; None while it runs (or before it starts)."""
        return None if self.process is None else self.process.poll()

    def answers(self) -> bool:
        """Whether both its web UI and its sync API answer."""
        try:
            return (requests.get(f"{self.web}/health", timeout=2).ok
                    and requests.get(f"{self.sync}/sync/api/health", timeout=2).ok)
        except requests.RequestException:
            return False

    def terminate(self) -> None:
        """Ask the launcher to stop its tree (SIGTERM), without waiting."""
        if self.exit_code() is None and self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def tail(self, lines: int = 25) -> str:
        """The last ``lines`` of its log, indented, for an error message."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def instance_env(place: Location, ports: tuple[int, int], data_dir: Path, *, marker: str, secret: str,
                 primary_sync: str | None, failover_order: int, password: str | None) -> dict[str, str]:
    """The environment of one instance: this process's, with every setting
    that decides where its data lives, how it is reached and what it is set
    by the demo (a developer's shell may hold values for their own monitor)."""
    env = dict(os.environ)
    env.update({
        MARKER: marker,
        "DATA_DIR": str(data_dir), "DATABASE_URL": "", "DATABASE_PATH": "", "REDIS_URL": "", "SECRET_KEY": "",
        "SECRETS_KEY": "",
        "HOST": HOST, "PORT": str(ports[0]), "SYNC_API_PORT": str(ports[1]),
        "PUBLIC_SYNC_URL": f"http://{HOST}:{ports[1]}",
        "INSTANCE_NAME": place.name, "INSTANCE_LOCATION": place.location,
        "INSTANCE_LATITUDE": str(place.latitude), "INSTANCE_LONGITUDE": str(place.longitude),
        "ENABLE_SYNC_API": "true" if primary_sync is None else "",
        "PRIMARY_SYNC_URL": primary_sync or "",
        "SYNC_SHARED_SECRET": secret, "FAILOVER_ORDER": str(failover_order),
        # Short rounds: results reach the primary, and the primary's
        # changes the dependents, within seconds.
        "HEARTBEAT_INTERVAL": "2", "SYNC_INTERVAL": "5", "CONNECTION_TIMEOUT": "5",
        "CONNECTIVITY_CHECK_TARGET": "", "TRUSTED_PROXIES": "0",
        # Three instances on one machine: one web worker and one check
        # worker each are plenty for a handful of endpoints.
        "WEB_CONCURRENCY": "1", "WORKER_PROCESSES": "1", "LOG_LEVEL": "INFO",
        "ADMIN_EMAIL": ADMIN_EMAIL if password else "", "ADMIN_PASSWORD": password or "",
    })
    return env


# --- the demo ---------------------------------------------------------------------


class StopRequest:
    """Set by the SIGINT and SIGTERM handler, polled by every wait. Not a
    ``threading.Event``: a handler runs in the main thread, between two
    steps of whatever it was doing, and could wait forever for the lock of
    an Event that thread holds in ``wait``."""

    def __init__(self):
        self.asked = False

    def set(self) -> None:
        """Ask for the stop (from the signal handler)."""
        self.asked = True

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self.asked

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less once a stop is asked for; returns whether one was."""
        deadline = time.monotonic() + seconds
        while not self.asked and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        return self.asked


class Progress:
    """Start-up lines on stdout, each step with the seconds it took."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.step_open = False  # a step's line waits for its outcome

    def line(self, text: str = "") -> None:
        """Print a line of its own."""
        self.close_step()
        print(text, file=self.out, flush=True)

    def begin(self, text: str) -> float:
        """Print a step, its outcome to follow on the same line; returns when it began."""
        self.close_step()
        print(f"  {text} ...", end="", file=self.out, flush=True)
        self.step_open = True
        return time.monotonic()

    def end(self, since: float, text: str) -> None:
        """Finish a step's line with its outcome and the seconds since ``since``."""
        print(f" {text} ({time.monotonic() - since:.1f} s)", file=self.out, flush=True)
        self.step_open = False

    def close_step(self) -> None:
        """End a step's line left open, so what follows starts a line."""
        if self.step_open:
            print(file=self.out, flush=True)
            self.step_open = False


@dataclass
class Demo:
    """Everything the demo started, and how to stop it."""

    first_port: int | None = None
    progress: Progress = field(default_factory=Progress)
    stopping: StopRequest = field(default_factory=StopRequest)
    root: Path | None = None
    target: DemoTarget | None = None
    instances: list[Instance] = field(default_factory=list)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    marker: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def primary(self) -> Instance:
        """The instance started as the primary: the first."""
        return self.instances[0]

    def start(self) -> bool:
        """Start the target, the three instances and the sample endpoints;
        False when a stop was asked for meanwhile. Raises ``DemoError``."""
        ports = choose_ports(self.first_port, 2 * len(LOCATIONS))
        with_ping = ping_works()
        self.root = Path(tempfile.mkdtemp(prefix="monitor-demo-"))
        self.target = DemoTarget()
        secret = secrets.token_urlsafe(24)
        for n, place in enumerate(LOCATIONS):
            data_dir = self.root / place.location
            data_dir.mkdir()
            is_primary = n == 0
            env = instance_env(place, (ports[2 * n], ports[2 * n + 1]), data_dir, marker=self.marker,
                               secret=secret, primary_sync=None if is_primary else f"http://{HOST}:{ports[1]}",
                               failover_order=n, password=self.password if is_primary else None)
            self.instances.append(Instance(place, "primary" if is_primary else "dependent", env,
                                           self.root / f"{place.location}.log"))

        out = self.progress
        out.line(f"Starting the demo: a primary and two dependents on {HOST}, and a target they check "
                 "(this takes half a minute or so)")
        # The primary first: dependents that find no primary back off for
        # seconds before they try again.
        self._start_instances([self.primary])
        if self.stopping.is_set():
            return False
        self._start_instances(self.instances[1:])
        if self.stopping.is_set():
            return False
        # Served from here on, after the last fork: the launchers start
        # with no thread running in this process (``child_processes``).
        self.target.serve()
        endpoints = sample_endpoints(self.target, with_ping)
        out.line(f"  {'target':<20} {self.target.url}/ (answers 503 on {FAILING_PATH} to {FAILING_LOCATION})")
        since = out.begin("sample endpoints")
        for payload in endpoints:
            self._api("post", "/api/v1/endpoints", json=payload)
        out.end(since, f"{len(endpoints)} added on the primary")
        if not with_ping:
            out.line("  (no ICMP here: this user may not send pings, so the demo has no ping endpoint)")
        since = out.begin("dependents joining the primary")
        joined = self._wait(self._dependents_joined, JOIN_TIMEOUT_SECONDS)
        if self.stopping.is_set():
            return False
        out.end(since, "both joined" if joined else "not yet; see the Instances page")
        since = out.begin("first results from every location")
        partial = self._wait(self._partial_endpoint, FIRST_RESULTS_TIMEOUT_SECONDS)
        if self.stopping.is_set():
            return False
        out.end(since, f"{partial['name']} is PARTIAL ({partial['consensus']['successfulLocations']} of "
                       f"{partial['consensus']['totalLocations']} up)" if partial
                else "still waiting; the dashboard shows them as they come")
        return True

    def _start_instances(self, instances: list[Instance]) -> None:
        for instance in instances:
            instance.launch()
        for instance in instances:
            self.progress.begin(f"{instance.place.location:<10} {instance.role:<9} {instance.web}/")
            if not self._wait(lambda: self._answering(instance), START_TIMEOUT_SECONDS):
                if self.stopping.is_set():
                    return
                raise DemoError(f"{instance.place.name} did not answer within {START_TIMEOUT_SECONDS:.0f} s; "
                                f"the end of its log:\n{instance.tail()}")
            self.progress.end(instance.started_at, "up")

    def _answering(self, instance: Instance) -> bool:
        code = instance.exit_code()
        if code is not None:
            raise DemoError(f"{instance.place.name} exited with {code} while starting; "
                            f"the end of its log:\n{instance.tail()}")
        return instance.answers()

    def _wait(self, predicate, timeout: float):
        """Poll ``predicate`` until it returns something truthy (returned),
        the timeout passes or a stop is asked for (None)."""
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set() and time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.stopping.wait(POLL_SECONDS)
        return None

    def _api(self, method: str, path: str, **kwargs) -> dict:
        """A call to the primary's JSON API as the demo's administrator."""
        try:
            response = requests.request(method, f"{self.primary.web}{path}", auth=(ADMIN_EMAIL, self.password),
                                        timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise DemoError(f"the primary's API did not answer {method.upper()} {path}: {exc}") from None
        if not response.ok:
            raise DemoError(f"the primary's API refused {method.upper()} {path}: HTTP {response.status_code} "
                            f"{response.text[:500]}")
        return response.json()

    def _dependents_joined(self) -> bool:
        members = self._api("get", "/api/v1/instances")["instances"]
        return sum(1 for member in members if member["role"] == "dependent" and member["status"] == "active") \
            >= len(self.instances) - 1

    def _partial_endpoint(self) -> dict | None:
        """The endpoint one location fails, once every endpoint has a
        consensus (none PENDING any more)."""
        listed = self._api("get", "/api/v1/endpoints")["endpoints"]
        if any(endpoint["status"] == "PENDING" for endpoint in listed):
            return None
        return next((endpoint for endpoint in listed if endpoint["status"] == "PARTIAL"), None)

    def announce(self) -> None:
        """The URL and credentials, once everything is up."""
        out = self.progress
        dependents = ", ".join(f"{i.web}/ ({i.place.location})" for i in self.instances[1:])
        out.line()
        out.line(f"The demo is running ({time.monotonic() - out.started:.0f} s to start).")
        out.line(f"  Dashboard:   {self.primary.web}/")
        out.line(f"  Email:       {ADMIN_EMAIL}")
        out.line(f"  Password:    {self.password}   (generated for this run)")
        out.line(f"  Dependents:  {dependents} (same sign-in)")
        out.line(f"  Data, logs:  {self.root} (removed when the demo stops)")
        out.line("Press Ctrl-C to stop everything.")

    def watch(self) -> int:
        """Until a stop is asked for: report an instance that exits (the
        others go on; a dependent takes over from a primary stopped by
        hand). Returns 1 if every instance has exited."""
        while not self.stopping.wait(1.0):
            for instance in self.instances:
                code = instance.exit_code()
                if code is not None and not instance.exit_reported:
                    instance.exit_reported = True
                    self.progress.line(f"{instance.place.name} ({instance.place.location}) exited with {code}; "
                                       f"the end of its log:\n{instance.tail(10)}")
            if all(instance.exit_code() is not None for instance in self.instances):
                self.progress.line("error: every instance has exited; stopping the demo")
                return 1
        return 0

    def stop(self) -> None:
        """Stop every tree (SIGTERM to each launcher, then SIGKILL to
        whatever is left of the trees), the target, and remove the folder."""
        running = [i for i in self.instances if i.process is not None and i.exit_code() is None]
        if running:
            self.progress.line(f"Stopping {len(running)} instance{'s' if len(running) > 1 else ''} "
                               "and the target ...")
        for instance in running:
            instance.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for instance in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                instance.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _ in range(5):
            left = self.leftovers()
            if not left:
                break
            self.progress.line(f"  killing {len(left)} process{'es' if len(left) > 1 else ''} left behind: "
                               f"{', '.join(str(proc.pid) for proc in left)}")
            for proc in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(left, timeout=5)
        for instance in self.instances:
            if instance.process is not None and instance.exit_code() is None:
                instance.process.wait(timeout=10)
        if self.target is not None:
            self.target.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.progress.line(f"Stopped; removed {self.root}.")

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of the demo's trees: those that carry its marker,
        or work in its folder (the embedded redis-server writes its process
        title over its environment)."""
        found = []
        root = str(self.root) if self.root is not None else None
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARKER) == self.marker or (
                        root and (proc.cwd() == root or proc.cwd().startswith(root + os.sep))):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found


def run(first_port: int | None = None) -> int:
    """Run the demo until Ctrl-C or SIGTERM; returns the exit code (2: it
    could not start)."""
    demo = Demo(first_port=first_port)

    def stop(signum, frame):
        """Ctrl-C or SIGTERM: every wait ends, then everything stops."""
        demo.stopping.set()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        if demo.start():
            demo.announce()
            code = demo.watch()
    except DemoError as exc:
        demo.progress.close_step()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 2 if not demo.instances else 1
    finally:
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        demo.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
