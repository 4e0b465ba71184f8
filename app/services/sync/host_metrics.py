"""This instance's host as the cluster sees it: load, memory, disk, uptime,
and where it stands on the map when its settings say.

Dependents send it in every heartbeat; the primary records its own the same
way, so the instances page shows every member alike.
"""
from __future__ import annotations

import os
import sys
import time

import psutil
from flask import current_app

from app import __version__


def system_info() -> dict:
    """The seed's ``systemInfo``: CPU, memory and data-disk use, load, uptime,
    and the instance's coordinates when INSTANCE_LATITUDE / _LONGITUDE are set."""
    settings = current_app.config["SETTINGS"]
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    coordinates = settings.instance_coordinates
    return {
        # Since the previous call in this process (the first call says 0.0).
        "cpuPercent": psutil.cpu_percent(interval=None),
        "memoryPercent": psutil.virtual_memory().percent,
        "diskPercent": psutil.disk_usage(str(settings.data_dir)).percent,
        "loadAverage": load,
        "uptimeSeconds": round(time.time() - psutil.Process().create_time(), 1),
        "version": __version__,
        "python": sys.version.split()[0],
        **({"latitude": coordinates[0], "longitude": coordinates[1]} if coordinates else {}),
    }
