"""The one-command start as a real process tree: embedded Redis, migrations,
web, sync API, worker and clock; an endpoint added on the command line is
checked and its results are served by the JSON API."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import ROOT, free_port

ADMIN = ("admin@example.org", "correct horse battery")


def wait_for(predicate, timeout, message):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(0.3)
    pytest.fail(message)


@pytest.fixture
def monitor(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DATABASE_PATH"}}
    env.update(DATA_DIR=str(tmp_path / "data"), PORT=str(free_port()), SYNC_API_PORT=str(free_port()),
               ADMIN_EMAIL=ADMIN[0], ADMIN_PASSWORD=ADMIN[1], INSTANCE_LOCATION="test-lab")
    log = open(tmp_path / "monitor.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "app", "start"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_for(lambda: requests.get(f"{base}/health", timeout=1).ok, 60,
                 f"web never answered; log:\n{(tmp_path / 'monitor.log').read_text()}")
        yield {"process": process, "env": env, "base": base, "log": tmp_path / "monitor.log"}
    finally:
        children = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        for child in children:
            if child.is_running():
                child.kill()
        log.close()


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_it_checks_an_endpoint_added_on_the_command_line(monitor, httpserver):
    httpserver.expect_request("/status").respond_with_data("all good")
    sync_port = monitor["env"]["SYNC_API_PORT"]
    health = requests.get(f"http://127.0.0.1:{sync_port}/sync/api/health", timeout=5).json()
    assert health["role"] == "standalone" and health["location"] == "test-lab"

    added = cli(monitor["env"], "endpoints", "add", "--name", "local", "--type", "http",
                "--target", httpserver.url_for("/status"), "--interval", "5", "--timeout", "2",
                "--option", "keyword=good")
    assert added.returncode == 0, added.stderr
    assert "added endpoint 1" in added.stdout

    def results():
        body = requests.get(f"{monitor['base']}/api/v1/endpoints/1/results", auth=ADMIN, timeout=2).json()
        return len(body["results"]) >= 2 and body["results"]

    found = wait_for(results, 40, f"no results; log:\n{monitor['log'].read_text()[-4000:]}")
    assert all(r["status"] == "UP" and r["location"] == "test-lab" for r in found)
    assert cli(monitor["env"], "endpoints", "list").stdout.count("UP") == 1
    shown = cli(monitor["env"], "results", "1", "--limit", "2")
    assert shown.returncode == 0 and "UP" in shown.stdout


def test_it_stops_every_child_on_sigterm(monitor):
    children = psutil.Process(monitor["process"].pid).children(recursive=True)
    assert len(children) >= 4  # web, sync, worker, clock (gunicorn adds its workers)
    monitor["process"].send_signal(signal.SIGTERM)
    assert monitor["process"].wait(timeout=20) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_it_refuses_to_start_with_a_bad_variable(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HEARTBEAT_INTERVAL": "often"}
    result = subprocess.run([sys.executable, "-m", "app", "start"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "HEARTBEAT_INTERVAL must be an integer" in result.stderr


def test_it_refuses_two_roles_at_once(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "ENABLE_SYNC_API": "true",
           "PRIMARY_SYNC_URL": "http://127.0.0.1:3002"}
    result = subprocess.run([sys.executable, "-m", "app", "start"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
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
    result = subprocess.run([sys.executable, "-m", "app", "start"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
