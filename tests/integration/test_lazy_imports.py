"""Libraries only some paths need stay out of the processes that serve and
check: each would cost every such process its size (alembic with mako and
pygments about 11 MB, kafka-python 7 MB, apprise 3 MB), and under the
launcher it would sit in the pages every child shares."""
import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.peers.process import MONITOR_SETTINGS

LOADED = ("import sys, {modules}; "
          "print(' '.join(sorted(m for m in ('alembic', 'kafka', 'apprise') if m in sys.modules)))")


def loaded_by(modules: str, data_dir) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in MONITOR_SETTINGS}
    env["DATA_DIR"] = str(data_dir)
    result = subprocess.run([sys.executable, "-c", LOADED.format(modules=modules)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_web_and_sync_apps_the_jobs_and_the_launcher_load_none_of_them(tmp_path):
    assert loaded_by("wsgi, app.launcher, app.cli, workers.clock, workers.worker, workers.jobs.checks, "
                     "workers.jobs.alerts, workers.jobs.sync, workers.jobs.consensus", tmp_path) == []


def test_the_paths_that_need_them_load_them(tmp_path):
    """An app built for migrations (the default: CLI, ``init``, the
    launcher's set-up child) binds Flask-Migrate; checking an apprise URL
    loads apprise."""
    assert loaded_by("app; app.create_app(serve='none'); from app.notifiers.apprise import Config; "
                     "Config.model_validate({'url': 'json://127.0.0.1/'})", tmp_path) == ["alembic", "apprise"]
