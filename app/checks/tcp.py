"""TCP check: can a connection to host:port be opened, and how fast."""
import socket
import time

from app.checks.base import CheckFailed, CheckOptions, CheckResult, CheckSpec, elapsed_ms
from app.checks.resolve import connect, resolve


class Options(CheckOptions):
    pass


def check(spec: CheckSpec) -> CheckResult:
    """Open a connection to ``spec.target``:``spec.port`` within ``spec.timeout``."""
    if not spec.port:
        raise CheckFailed("no port given")
    started = time.perf_counter()
    deadline = started + spec.timeout
    addresses = resolve(spec.target, spec.port, deadline=deadline, timeout=spec.timeout)
    try:
        sock = connect(addresses, deadline)
    except TimeoutError:
        raise CheckFailed(f"connection to {spec.target}:{spec.port} timed out after {spec.timeout:g} s") from None
    except OSError as exc:
        raise CheckFailed(f"connection to {spec.target}:{spec.port} failed: {exc.strerror or exc}") from None
    took = elapsed_ms(started)
    peer = sock.getpeername()
    sock.close()
    return CheckResult(is_ok=True, check_type="tcp", response_time_ms=took,
                       metadata={"address": peer[0], "port": peer[1]})
