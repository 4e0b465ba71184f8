"""The command line as a user runs it (``python -m app``, a real process):
its help names the monitor's commands only, and a command's output is its
output alone, with log lines on stderr and only from WARNING unless
LOG_LEVEL asks for more."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.peers.process import MONITOR_SETTINGS

FLASK_OWN = ("--app", "--debug", "--env-file", "Show the Flask version", "routes", "shell", " run ")
OUR_COMMANDS = ("start", "init", "endpoints", "results", "users", "api-keys", "cluster", "db", "demo",
                "backup", "restore", "maintenance", "secrets", "config")


def monitor(data_dir, *args, merged=False, **settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in MONITOR_SETTINGS}
    env.update(DATA_DIR=str(data_dir), **settings)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, text=True, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE)


def test_it_lists_only_the_monitors_commands_and_options_in_help(tmp_path):
    shown = monitor(tmp_path, "--help")
    assert shown.returncode == 0, shown.stderr
    commands = shown.stdout.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert listed == set(OUR_COMMANDS)
    for flask_own in FLASK_OWN:
        assert flask_own not in shown.stdout


def test_an_unknown_command_is_named(tmp_path):
    refused = monitor(tmp_path, "routes")
    assert refused.returncode == 2
    assert "No such command 'routes'" in refused.stderr


def test_commands_print_their_output_alone(tmp_path):
    # Terminal-like: both streams into one, as a user sees them.
    initialised = monitor(tmp_path, "init", merged=True)
    assert initialised.returncode == 0, initialised.stdout
    assert initialised.stdout.startswith("database ready; instance ")
    assert initialised.stdout.count("\n") == 1, initialised.stdout

    added = monitor(tmp_path, "endpoints", "add", "--name", "web", "--type", "http",
                    "--target", "http://127.0.0.1:9/", merged=True)
    assert added.stdout == "added endpoint 1: web\n"

    listed = monitor(tmp_path, "endpoints", "list", merged=True)
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["ID", "STATUS"], listed.stdout
    assert "web" in lines[1]


def test_log_level_brings_the_log_lines_back_on_stderr(tmp_path):
    assert monitor(tmp_path, "init").returncode == 0
    added = monitor(tmp_path, "endpoints", "add", "--name", "api", "--type", "tcp", "--target", "127.0.0.1",
                    "--port", "9", LOG_LEVEL="INFO")
    assert added.stdout == "added endpoint 1: api\n"
    assert "INFO app.services.endpoints: endpoint 1 (api) created" in added.stderr


def test_a_bad_command_still_says_why_on_stderr(tmp_path):
    assert monitor(tmp_path, "init").returncode == 0
    missing = monitor(tmp_path, "endpoints", "remove", "42")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr == "error: no endpoint with id 42\n"


def test_a_command_before_the_first_start_says_what_to_do(tmp_path):
    listed = monitor(tmp_path, "endpoints", "list")
    assert listed.returncode == 2
    assert listed.stdout == ""
    assert listed.stderr == "error: the database has no tables yet; run `python -m app init` (or `start`) first\n"
