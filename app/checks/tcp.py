"""TCP check: can a connection to host:port be opened, and how fast."""
import socket
import time

from app.checks.base import CheckFailed, CheckOptions, CheckResult, CheckSpec, elapsed_ms


class Options(CheckOptions):
    pass


def check(spec: CheckSpec) -> CheckResult:
    if not spec.port:
        raise CheckFailed("no port given")
    started = time.perf_counter()
    try:
        sock = socket.create_connection((spec.target, spec.port), timeout=spec.timeout)
    except socket.timeout:
        raise CheckFailed(f"connection to {spec.target}:{spec.port} timed out after {spec.timeout:g} s") from None
    except socket.gaierror as exc:
        raise CheckFailed(f"cannot resolve {spec.target}: {exc.strerror}") from None
    except OSError as exc:
        raise CheckFailed(f"connection to {spec.target}:{spec.port} failed: {exc.strerror or exc}") from None
    took = elapsed_ms(started)
    peer = sock.getpeername()
    sock.close()
    return CheckResult(is_ok=True, check_type="tcp", response_time_ms=took,
                       metadata={"address": peer[0], "port": peer[1]})
