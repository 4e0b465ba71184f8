"""The one-command start as a real process tree: embedded Redis, migrations,
web, sync API, worker and clock; an endpoint added on the command line is
checked and its results are served by the JSON API."""
import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from tests.conftest import ROOT
from tests.peers.process import ADMIN, MonitorProcess, monitor_env, wait_until

pytestmark = pytest.mark.process_tree


@pytest.fixture
def monitor(tmp_path):
    env = monitor_env(tmp_path / "data", admin=ADMIN, INSTANCE_LOCATION="test-lab")
    with MonitorProcess(env, tmp_path / "monitor.log") as running:
        yield running


def cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_it_checks_an_endpoint_added_on_the_command_line(monitor, httpserver):
    httpserver.expect_request("/status").respond_with_data("all good")
    health = requests.get(f"{monitor.sync}/sync/api/health", timeout=30).json()
    assert health["role"] == "standalone" and health["location"] == "test-lab"

    added = cli(monitor.env, "endpoints", "add", "--name", "local", "--type", "http",
                "--target", httpserver.url_for("/status"), "--interval", "5", "--timeout", "2",
                "--option", "keyword=good")
    assert added.returncode == 0, added.stderr
    assert "added endpoint 1" in added.stdout

    def results():
        body = requests.get(f"{monitor.web}/api/v1/endpoints/1/results", auth=ADMIN, timeout=10).json()
        return len(body["results"]) >= 2 and body["results"]

    found = wait_until(results, 60, lambda: f"no results; log:\n{monitor.tail()}")
    assert all(r["status"] == "UP" and r["location"] == "test-lab" for r in found)
    assert cli(monitor.env, "endpoints", "list").stdout.count("UP") == 1
    shown = cli(monitor.env, "results", "1", "--limit", "2")
    assert shown.returncode == 0 and "UP" in shown.stdout


def test_it_stops_every_child_on_sigterm(monitor):
    children = psutil.Process(monitor.process.pid).children(recursive=True)
    assert len(children) >= 4  # web (for the sync API too), workers, clock (gunicorn adds its workers)
    monitor.process.send_signal(signal.SIGTERM)
    assert monitor.process.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    # The embedded redis-server runs in a session of its own; it stops too.
    gone, alive = psutil.wait_procs(monitor.leftovers(), timeout=30)
    assert alive == []


def test_it_refuses_to_start_with_a_bad_variable(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HEARTBEAT_INTERVAL": "often"}
    result = cli(env, "start")
    assert result.returncode == 2
    assert "HEARTBEAT_INTERVAL must be an integer" in result.stderr


def test_it_refuses_two_roles_at_once(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "ENABLE_SYNC_API": "true",
           "PRIMARY_SYNC_URL": "http://127.0.0.1:3002"}
    result = cli(env, "start")
    assert result.returncode == 2
    assert "ENABLE_SYNC_API and PRIMARY_SYNC_URL" in result.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WEB_CONCURRENCY", "many", "WEB_CONCURRENCY must be an integer"),
    ("WORKER_PROCESSES", "0", "WORKER_PROCESSES must be from 1 to 64"),
    ("ADMIN_EMAIL", "not-an-address", "ADMIN_EMAIL/ADMIN_PASSWORD: email must be an address"),
])
def test_it_names_bad_process_settings(tmp_path, name, value, message):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "ADMIN_PASSWORD": "correct horse battery", name: value}
    env.pop("REDIS_URL", None)
    result = cli(env, "start", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr


def test_a_stop_during_set_up_leaves_nothing_running(tmp_path):
    """SIGTERM while migrations run (the embedded Redis is already up, the
    children are not): the launcher exits cleanly and stops the Redis too."""
    tree = MonitorProcess(monitor_env(tmp_path / "data", admin=ADMIN), tmp_path / "monitor.log")
    try:
        tree.launch()
        wait_until(lambda: "embedded Redis at" in tree.tail(), 60, lambda: f"no embedded Redis; log:\n{tree.tail()}",
                   interval=0.05)
        tree.terminate()
        assert tree.process.wait(timeout=60) == 0, tree.tail()
        gone, alive = psutil.wait_procs(tree.leftovers(), timeout=30)
        assert alive == [], tree.tail()
    finally:
        tree.stop()


def test_one_server_answers_each_port_with_its_own_app_only(monitor):
    assert requests.get(f"{monitor.web}/healthz", timeout=30).status_code == 200
    assert requests.get(f"{monitor.sync}/sync/api/health", timeout=30).status_code == 200
    # The sync API is not on the web port, nor the JSON API on the sync port,
    # whatever the Host header says.
    assert requests.get(f"{monitor.web}/sync/api/health", timeout=30).status_code == 404
    assert requests.get(f"{monitor.sync}/api/v1/endpoints", auth=ADMIN, timeout=30).status_code == 404
    port = monitor.env["PORT"]
    assert requests.get(f"{monitor.sync}/api/v1/endpoints", auth=ADMIN, timeout=30,
                        headers={"Host": f"127.0.0.1:{port}"}).status_code == 404


def children_named(monitor) -> dict[str, int]:
    return {proc.name(): proc.pid for proc in psutil.Process(monitor.process.pid).children()}


def test_it_forks_named_children_and_restarts_a_killed_one(monitor):
    """The web server, the worker and the clock are forked children named
    after what they run; a killed one is forked again and the instance is
    ready again."""
    before = children_named(monitor)
    assert {"web", "clock", "worker.1"} <= set(before), before
    assert "worker.2" not in before  # one RQ worker by default
    for name in ("worker.1", "web"):
        os.kill(before[name], signal.SIGKILL)

    def restarted():
        now = children_named(monitor)
        return all(now.get(name) not in (None, before[name]) for name in ("worker.1", "web")) and now

    after = wait_until(restarted, 30, lambda: f"not restarted; log:\n{monitor.tail()}")
    assert after["clock"] == before["clock"]
    wait_until(lambda: requests.get(f"{monitor.web}/readyz", timeout=10).status_code == 200, 60,
               lambda: f"not ready again; log:\n{monitor.tail()}")
    assert requests.get(f"{monitor.sync}/sync/api/health", timeout=30).status_code == 200
    log = monitor.tail(200_000)
    for name in ("worker.1", "web"):
        assert f"{name} (pid {before[name]}) exited with -9; restarting in 1 s" in log, log
