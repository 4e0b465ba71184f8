"""Name-lookup tests against a real DNS server, through the real system resolver.

The tests marked ``dns`` (those that use the ``resolver`` fixture) run here,
in a pytest of their own inside a network namespace this test makes, whose
``/etc/resolv.conf`` names the DNS server they start on its loopback. In
the outer run they are skipped, and this test stands for them.
"""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.peers.dns import DnsNamespace, inside_namespace


def test_name_lookups_against_a_real_dns_server():
    if inside_namespace():
        pytest.skip("already inside the namespace")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    try:
        namespace = DnsNamespace(f"epm-dns-{os.getpid()}").__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        run = namespace.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "dns",
                             "tests/checks"], cwd=ROOT, timeout=600)
    finally:
        namespace.__exit__()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, report
