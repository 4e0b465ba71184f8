"""Secrets at rest from the command line, as real processes: a bad
SECRETS_KEY or a key that does not open the stored secrets stops the start
with exit code 2 and the variable named; ``secrets rotate`` moves every
secret to the new key, after which the old one is not needed."""
import os
import subprocess
import sys

import psutil
from cryptography.fernet import Fernet

from tests.conftest import ROOT

KEY_OLD = Fernet.generate_key().decode()
KEY_NEW = Fernet.generate_key().decode()


def cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def environment(data_dir, **more):
    env = {**os.environ, "DATA_DIR": str(data_dir), **more}
    for name in ("REDIS_URL", "SECRETS_KEY", "DATABASE_URL", "DATABASE_PATH"):
        if name not in more:
            env.pop(name, None)
    return env


def test_a_bad_secrets_key_stops_the_start_naming_the_variable(tmp_path):
    result = cli(environment(tmp_path, SECRETS_KEY=f"{KEY_OLD},not-a-key"), "start")
    assert result.returncode == 2
    assert "SECRETS_KEY must be one or more Fernet keys" in result.stderr and "key 2 of 2" in result.stderr
    assert "not-a-key" not in result.stderr and KEY_OLD not in result.stderr


def test_a_wrong_key_stops_the_start_and_a_rotation_moves_every_secret_to_the_new_key(tmp_path):
    data = tmp_path / "data"
    old = environment(data, SECRETS_KEY=KEY_OLD)
    assert cli(old, "init").returncode == 0
    added = cli(old, "endpoints", "add", "--name", "shop", "--type", "http",
                "--target", "https://ops:pa55-s3cret@shop.example.org/", "--option",
                'headers={"X-Api-Key": "k3y-s3cret"}')
    assert added.returncode == 0, added.stderr[-2000:]

    # The whole start, embedded Redis and all, stops before any child runs; nothing is left running.
    started = cli(environment(data, SECRETS_KEY=KEY_NEW), "start")
    assert started.returncode == 2, started.stderr[-2000:]
    assert ("configuration error: 2 stored secrets (endpoint URL credentials: 1, endpoint secret options and "
            "headers: 1) cannot be decrypted with SECRETS_KEY") in started.stderr
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data) in " ".join(p.info["cmdline"] or [])]

    rotated = cli(environment(data, SECRETS_KEY=f"{KEY_NEW},{KEY_OLD}"), "secrets", "rotate")
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    assert "done: 2 secrets in 2 rows re-encrypted" in rotated.stdout

    ready = cli(environment(data, SECRETS_KEY=KEY_NEW), "init")
    assert ready.returncode == 0, ready.stderr[-2000:]
    assert "database ready" in ready.stdout
    listed = cli(environment(data, SECRETS_KEY=KEY_NEW), "endpoints", "list", "--json")
    assert listed.returncode == 0 and "https://shop.example.org/" in listed.stdout
    assert cli(environment(data, SECRETS_KEY=KEY_OLD), "init").returncode == 2  # the old key alone no longer reads them
