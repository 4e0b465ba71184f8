"""The deployment files, checked where the tools run offline: the compose
examples parsed by ``docker compose config`` (or docker-compose), the nginx
example by ``nginx -t``, and the Dockerfile read here: what it copies
exists, what its healthcheck asks is a real route, and it runs as no root."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.config import load_settings
from tests.conftest import ROOT, make_app
from tests.peers.nginx import EXAMPLE_PORTS, EXAMPLE_UPSTREAMS, Nginx, make_certificates, nginx_binary, render_example
from tests.peers.ports import reserve_port
from tests.peers.process import MONITOR_SETTINGS

# Real processes (or tools) whatever the database: left out of the PostgreSQL pass.
pytestmark = pytest.mark.process_tree

COMPOSE = ROOT / "deploy" / "compose"
DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                             if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def compose_command() -> list[str] | None:
    """``docker compose`` if the plugin answers, else ``docker-compose``, else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_it_copies_only_files_that_exist_and_ignores_none_it_needs():
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [args for instruction, args in dockerfile_instructions() if instruction == "COPY"]
    assert copies
    for arguments in copies:
        sources = [word for word in shlex.split(arguments) if not word.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
            assert source.rstrip("/") not in ignored, f"COPY {source}, but .dockerignore leaves it out"
    # Everything a process of the Procfile imports is in the image.
    copied = {source.rstrip("/") for arguments in copies for source in shlex.split(arguments)[:-1]}
    for needed in ("app", "workers", "migrations", "wsgi.py", "gunicorn.conf.py", "requirements.txt"):
        assert needed in copied, f"the image lacks {needed}"
    # The fetched front-end files never come from a checkout.
    assert "app/static/vendor" in ignored


def test_it_runs_as_a_user_fetches_assets_and_keeps_data_in_a_volume():
    instructions = dockerfile_instructions()
    names = [instruction for instruction, _ in instructions]
    assert names[0] in ("ARG", "FROM")
    base = dict(instructions)["ARG"] if names[0] == "ARG" else dict(instructions)["FROM"]
    assert re.search(r"python:3\.1[1-9][\w.-]*", base), base
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The user is set before the command runs, after the last RUN as root.
    assert names.index("USER") > max(i for i, name in enumerate(names) if name == "RUN")
    assert any(instruction == "RUN" and "app/static/vendor.py" in args for instruction, args in instructions)
    assert any(instruction == "VOLUME" and "/data" in args for instruction, args in instructions)
    env = " ".join(args for instruction, args in instructions if instruction == "ENV")
    assert "DATA_DIR=/data" in env and "HOST=0.0.0.0" in env
    (command,) = [args for instruction, args in instructions if instruction == "CMD"]
    assert command == '["python", "-m", "app", "start"]'


def test_its_healthchecks_ask_real_routes(tmp_path):
    """The Dockerfile's and the compose files' probes name routes the apps serve."""
    web = make_app(tmp_path, serve="web")
    sync = make_app(tmp_path, {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": "s" * 16}, serve="sync")
    routes = {rule.rule for app in (web, sync) for rule in app.url_map.iter_rules()}
    probes = re.findall(r"http://127\.0\.0\.1:[^/]+(/[\w/]+)", DOCKERFILE.read_text())
    for compose_file in COMPOSE.glob("*.yml"):
        probes += re.findall(r"http://127\.0\.0\.1:\d+(/[\w/]+)", compose_file.read_text())
    assert "/readyz" in probes and "/sync/api/readyz" in probes
    for path in probes:
        assert path in routes, f"a healthcheck asks {path}, which no route serves"
    healthcheck = [args for instruction, args in dockerfile_instructions() if instruction == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "CMD" in healthcheck[0]


def test_the_compose_processes_follow_the_procfile():
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    primary = yaml.safe_load((COMPOSE / "primary.yml").read_text())
    services = primary["services"]
    for process in ("web", "sync", "worker", "clock"):
        assert process in services, f"primary.yml has no {process} service"
        command = services[process]["command"]
        # The same entry point as the Procfile's line.
        entry = procfile[process].split()[-1]
        assert entry in command, (process, command, entry)
    assert services["migrate"]["command"][-1] == procfile["release"].split()[-1]
    assert services["web"]["healthcheck"]["test"][-1].count("/readyz") == 1
    assert "REDIS_URL" in str(services["web"]["environment"])
    dependent = yaml.safe_load((COMPOSE / "dependent.yml").read_text())
    assert "PRIMARY_SYNC_URL" in dependent["services"]["monitor"]["environment"]


def test_the_env_file_examples_are_valid_settings():
    """Each example env file, as the monitor reads it, passes validation."""
    for name, extra in (("primary.env.example", {"ENABLE_SYNC_API": "true"}),
                        ("dependent.env.example", {"PRIMARY_SYNC_URL": "https://monitor.example.org:8443"})):
        env = dict(line.split("=", 1) for line in (COMPOSE / name).read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
        settings = load_settings({**env, **extra, "DATA_DIR": "/tmp/unused"})
        assert settings.sync_shared_secret and len(settings.secret_key) >= 16


@pytest.mark.skipif(compose_command() is None, reason="neither `docker compose` nor docker-compose is installed")
@pytest.mark.parametrize("name", ["primary", "dependent"])
def test_docker_compose_parses_the_examples(name, tmp_path):
    folder = tmp_path / "compose"
    shutil.copytree(COMPOSE, folder)
    shutil.copy(folder / f"{name}.env.example", folder / f"{name}.env")
    done = subprocess.run([*compose_command(), "-f", str(folder / f"{name}.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=folder)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["services"], done.stdout
    # The env file's secrets reach the processes.
    some_service = next(iter(s for s in resolved["services"].values() if "SYNC_SHARED_SECRET" in s.get("environment", {})))
    assert some_service["environment"]["SYNC_SHARED_SECRET"].startswith("change-me")


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")
def test_nginx_accepts_the_example(tmp_path):
    make_certificates(tmp_path / "tls")
    site = render_example(tmp_path / "tls", {p: reserve_port() for p in EXAMPLE_PORTS},
                          {p: reserve_port() for p in EXAMPLE_UPSTREAMS})
    assert "ssl_verify_client on;" in site and str(tmp_path / "tls") in site
    done = Nginx(tmp_path / "nginx", site).test_config()
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")
def test_nginx_refuses_a_broken_example(tmp_path):
    """The check above can fail: a missing certificate is refused."""
    make_certificates(tmp_path / "tls")
    site = render_example(tmp_path / "tls", {p: reserve_port() for p in EXAMPLE_PORTS},
                          {p: reserve_port() for p in EXAMPLE_UPSTREAMS})
    (tmp_path / "tls" / "instances-ca.pem").unlink()
    done = Nginx(tmp_path / "nginx", site).test_config()
    assert done.returncode != 0 and "instances-ca.pem" in done.stderr


def test_the_files_the_image_copies_are_enough_to_run(tmp_path):
    """Laid out as the Dockerfile copies them (nothing else of the checkout),
    the app migrates a database and both WSGI apps load."""
    image = tmp_path / "app-root"
    image.mkdir()
    # What .dockerignore leaves out of the context (the fetched vendor/ is made at build time).
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "vendor")
    for arguments in (args for instruction, args in dockerfile_instructions() if instruction == "COPY"):
        *sources, target = [word for word in shlex.split(arguments) if not word.startswith("--")]
        into_directory = target.endswith("/") or target == "."
        for source in sources:
            if (ROOT / source).is_dir():  # a directory's contents go into the target
                shutil.copytree(ROOT / source, image / target, ignore=skip, dirs_exist_ok=True)
            else:
                destination = image / target / Path(source).name if into_directory else image / target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, destination)
    assert not (image / "tests").exists() and (image / "app" / "static" / "vendor.py").exists()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH" and key not in MONITOR_SETTINGS}
    env.update(DATA_DIR=str(tmp_path / "data"), HOST="0.0.0.0")
    init = subprocess.run([sys.executable, "-m", "app", "init"], cwd=image, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "database ready" in init.stdout
    loaded = subprocess.run([sys.executable, "-c", "import app, wsgi; print(app.__file__)"], cwd=image, env=env,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().startswith(str(image))
