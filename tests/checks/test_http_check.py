"""HTTP(S) check against real servers on loopback (pytest-httpserver, trustme)."""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time

import pytest
import trustme
from cryptography import x509
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app import __version__
from app.checks import CHECK_TYPES, run_check

TIMEOUT = 2.0


class LoopbackServer(HTTPServer):
    """pytest-httpserver with a short poll, so stopping it takes 50 ms, not 500."""

    def __init__(self, **kwargs):
        super().__init__(host="127.0.0.1", threaded=True, **kwargs)

    def thread_target(self) -> None:
        self.server.serve_forever(poll_interval=0.05)


def http_check(url: str, timeout: float = TIMEOUT, **options):
    return run_check("http", url, None, timeout, options)


@pytest.fixture(scope="module")
def shared_server():
    # Threaded, so a handler that sleeps past a check's timeout cannot stall
    # the tests after it.
    server = LoopbackServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(shared_server):
    yield shared_server
    shared_server.clear()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def https_server():
    """Start an HTTPS server on loopback presenting the given leaf certificate."""
    started = []

    def start(cert: trustme.LeafCert) -> HTTPServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        srv = LoopbackServer(ssl_context=context)
        srv.start()
        started.append(srv)
        srv.expect_request("/").respond_with_data("secure hello")
        return srv

    yield start
    for srv in started:
        srv.stop()


def closed_port() -> int:
    # Bound then closed: nothing listens there, so connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_reports_up_for_200(server):
    server.expect_request("/health").respond_with_data("ok")

    result = http_check(server.url_for("/health"))

    assert result.is_ok, result.failure_reason
    assert result.check_type == "http"
    assert result.response_time_ms > 0
    assert result.metadata == {"httpStatus": 200, "url": server.url_for("/health"), "redirects": 0}


def test_it_reports_down_with_the_status_for_500(server):
    server.expect_request("/").respond_with_data("boom", status=500)

    result = http_check(server.url_for("/"))

    assert not result.is_ok
    assert result.failure_reason == "HTTP 500, expected 200-299"
    assert result.metadata["httpStatus"] == 500
    assert result.response_time_ms is not None


@pytest.mark.parametrize(("status", "expected", "is_ok"), [
    (404, [404], True),
    (404, ["200-299", 404], True),
    (204, ["2xx"], True),
    (503, ["500-502"], False),
    (200, [201], False),
])
def test_it_judges_the_status_against_expected_codes(server, status, expected, is_ok):
    server.expect_request("/").respond_with_data("", status=status)

    result = http_check(server.url_for("/"), expected_status_codes=expected)

    assert result.is_ok is is_ok, result.failure_reason


def test_it_finds_a_keyword_in_the_body(server):
    server.expect_request("/").respond_with_data("<h1>All systems operational</h1>")

    assert http_check(server.url_for("/"), keyword="operational").is_ok


def test_it_reports_a_missing_keyword(server):
    server.expect_request("/").respond_with_data("<h1>Maintenance</h1>")

    result = http_check(server.url_for("/"), keyword="operational")

    assert not result.is_ok
    assert result.failure_reason == "keyword 'operational' not found"
    assert result.metadata["httpStatus"] == 200


def test_it_reports_a_keyword_that_must_be_absent(server):
    server.expect_request("/").respond_with_data("database error: timeout")

    result = http_check(server.url_for("/"), keyword="error", keyword_absent=True)

    assert not result.is_ok
    assert result.failure_reason == "keyword 'error' found"


def test_it_passes_when_an_absent_keyword_is_absent(server):
    server.expect_request("/").respond_with_data("all good")

    assert http_check(server.url_for("/"), keyword="error", keyword_absent=True).is_ok


def test_it_searches_only_the_first_max_body_bytes(server):
    server.expect_request("/").respond_with_data("x" * 5000 + "needle")

    result = http_check(server.url_for("/"), keyword="needle", max_body_bytes=4096)

    assert not result.is_ok
    assert result.failure_reason == "keyword 'needle' not found in the first 4096 bytes"


def test_it_times_out_on_a_slow_server(server):
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response("late")

    server.expect_request("/").respond_with_handler(slow)

    result = http_check(server.url_for("/"), timeout=0.3)

    assert not result.is_ok
    assert result.failure_reason.startswith("timed out after 0.3 s")


def test_it_enforces_the_deadline_on_a_trickling_body(server):
    # Each chunk comes well within the timeout, the whole body does not: only
    # an overall deadline catches this.
    def trickle(request: Request) -> Response:
        def chunks():
            for _ in range(10):
                yield b"x"
                time.sleep(0.1)
        return Response(chunks())

    server.expect_request("/").respond_with_handler(trickle)

    result = http_check(server.url_for("/"), timeout=0.4, keyword="never")

    assert not result.is_ok
    assert result.failure_reason.startswith("timed out after 0.4 s reading the body")


def test_it_follows_redirects_and_counts_them(server):
    server.expect_request("/old").respond_with_data("", status=301, headers={"Location": "/older"})
    server.expect_request("/older").respond_with_data("", status=302, headers={"Location": server.url_for("/new")})
    server.expect_request("/new").respond_with_data("arrived")

    result = http_check(server.url_for("/old"), keyword="arrived")

    assert result.is_ok, result.failure_reason
    assert result.metadata["redirects"] == 2
    assert result.metadata["url"] == server.url_for("/new")


def test_it_reports_a_redirect_when_redirects_are_disabled(server):
    server.expect_request("/old").respond_with_data("", status=302, headers={"Location": "/new"})

    result = http_check(server.url_for("/old"), follow_redirects=False)

    assert not result.is_ok
    assert result.failure_reason == "HTTP 302, expected 200-299 (redirect to /new)"
    assert result.metadata["redirects"] == 0


def test_it_stops_after_max_redirects(server):
    server.expect_request("/loop").respond_with_data("", status=302, headers={"Location": "/loop"})

    result = http_check(server.url_for("/loop"), max_redirects=3)

    assert not result.is_ok
    assert result.failure_reason.startswith("too many redirects (more than 3)")
    assert len(server.log) == 4


def test_it_sends_method_body_and_headers(server):
    server.expect_request("/submit", method="POST", data="hello=1",
                          headers={"X-Token": "abc", "Content-Type": "application/x-www-form-urlencoded"},
                          ).respond_with_data("accepted", status=201)

    result = http_check(server.url_for("/submit"), method="POST", body="hello=1",
                        headers={"X-Token": "abc", "Content-Type": "application/x-www-form-urlencoded"})

    assert result.is_ok, result.failure_reason
    assert result.metadata["httpStatus"] == 201
    request, _ = server.log[0]
    assert request.headers["User-Agent"].startswith("endpoint-monitor/")


def test_its_user_agent_names_the_location_it_checks_from(server):
    server.expect_request("/whoami").respond_with_data("ok")

    result = run_check("http", server.url_for("/whoami"), None, TIMEOUT, {}, location="frankfurt")

    assert result.is_ok, result.failure_reason
    request, _ = server.log[0]
    assert request.headers["User-Agent"] == f"endpoint-monitor/{__version__} (location frankfurt)"


def test_a_location_that_would_break_the_user_agent_is_percent_encoded(server):
    server.expect_request("/whoami").respond_with_data("ok")

    result = run_check("http", server.url_for("/whoami"), None, TIMEOUT, {}, location="Zürich (rack 2)\r\nX: y")

    assert result.is_ok, result.failure_reason
    request, _ = server.log[0]
    assert request.headers["User-Agent"] == (
        f"endpoint-monitor/{__version__} (location Z%C3%BCrich %28rack 2%29%0D%0AX: y)")
    assert "X" not in request.headers


def test_a_user_agent_header_of_the_endpoint_replaces_the_location_one(server):
    server.expect_request("/whoami").respond_with_data("ok")

    result = run_check("http", server.url_for("/whoami"), None, TIMEOUT, {"headers": {"user-agent": "probe/2"}},
                       location="frankfurt")

    assert result.is_ok, result.failure_reason
    request, _ = server.log[0]
    assert request.headers["User-Agent"] == "probe/2"


def test_it_switches_to_get_without_body_after_303(server):
    server.expect_request("/form", method="POST").respond_with_data("", status=303, headers={"Location": "/done"})
    server.expect_request("/done", method="GET").respond_with_data("thanks")

    result = http_check(server.url_for("/form"), method="POST", body="a=1")

    assert result.is_ok, result.failure_reason
    request, _ = server.log[1]
    assert request.method == "GET"
    assert request.get_data() == b""


def test_it_keeps_method_and_body_after_307(server):
    server.expect_request("/v1", method="PUT").respond_with_data("", status=307, headers={"Location": "/v2"})
    server.expect_request("/v2", method="PUT", data="payload").respond_with_data("stored")

    result = http_check(server.url_for("/v1"), method="PUT", body="payload")

    assert result.is_ok, result.failure_reason
    assert result.metadata["redirects"] == 1


def test_it_drops_credentials_on_a_redirect_to_another_origin(server):
    other = LoopbackServer()
    other.start()
    try:
        other.expect_request("/landing").respond_with_data("elsewhere")
        server.expect_request("/private").respond_with_data(
            "", status=302, headers={"Location": other.url_for("/landing")})

        result = http_check(server.url_for("/private"), headers={"Authorization": "Bearer secret"})

        assert result.is_ok, result.failure_reason
        assert server.log[0][0].headers.get("Authorization") == "Bearer secret"
        assert "Authorization" not in other.log[0][0].headers
    finally:
        other.stop()


def test_it_resolves_the_host_name_and_keeps_it_in_the_host_header(server):
    seen = []

    def record(request: Request) -> Response:
        seen.append(request.headers["Host"])
        return Response("ok")

    server.expect_request("/health").respond_with_handler(record)
    url = f"http://localhost:{server.port}/health"

    result = http_check(url)

    assert result.is_ok, result.failure_reason
    assert result.metadata["url"] == url
    assert seen == [f"localhost:{server.port}"]


def test_it_reports_an_unknown_host(resolver):
    resolver.unknown("nowhere.test")

    result = http_check("http://nowhere.test/")

    assert not result.is_ok
    assert result.failure_reason == "cannot resolve nowhere.test: Name or service not known"


def test_it_reports_connection_refused():
    port = closed_port()

    result = http_check(f"http://127.0.0.1:{port}/")

    assert not result.is_ok
    assert result.failure_reason == f"connection refused by 127.0.0.1:{port}"


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://127.0.0.1/file", "only http:// and https:// URLs can be checked"),
    ("127.0.0.1/health", "only http:// and https:// URLs can be checked"),
    ("http:///path", "no host"),
    ("http://127.0.0.1:99999/", "Port out of range"),
])
def test_it_reports_a_bad_url(url, reason):
    result = http_check(url)

    assert not result.is_ok
    assert result.failure_reason.startswith(f"invalid URL {url!r}")
    assert reason in result.failure_reason


def test_it_reports_certificate_info(https_server, ca, ca_bundle):
    not_after = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).replace(microsecond=0)
    cert = ca.issue_cert("127.0.0.1", common_name="monitor.test", not_after=not_after)
    srv = https_server(cert)

    result = http_check(srv.url_for("/"), ca_bundle=ca_bundle, keyword="secure")

    assert result.is_ok, result.failure_reason
    info = result.metadata["certificateInfo"]
    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    assert info["subject"] == "monitor.test"
    # trustme's CA has no common name: the full distinguished name stands in.
    assert info["issuer"] == leaf.issuer.rfc4514_string()
    assert info["validTo"] == not_after.isoformat()
    assert dt.datetime.fromisoformat(info["validTo"]) == leaf.not_valid_after_utc
    assert dt.datetime.fromisoformat(info["validFrom"]) == leaf.not_valid_before_utc
    assert info["daysRemaining"] in (29, 30)
    assert info["serialNumber"] == format(leaf.serial_number, "X")


def test_it_verifies_the_certificate_against_the_host_name(https_server, ca, ca_bundle):
    srv = https_server(ca.issue_cert("localhost", common_name="localhost"))

    result = http_check(f"https://localhost:{srv.port}/", ca_bundle=ca_bundle, keyword="secure")

    assert result.is_ok, result.failure_reason
    assert result.metadata["certificateInfo"]["subject"] == "localhost"


def test_it_sends_the_host_name_for_sni(ca, ca_bundle):
    server_names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    srv = LoopbackServer(ssl_context=context)
    srv.expect_request("/").respond_with_data("ok")
    srv.start()
    try:
        result = http_check(f"https://localhost:{srv.port}/", ca_bundle=ca_bundle)
    finally:
        srv.stop()

    assert result.is_ok, result.failure_reason
    assert server_names == ["localhost"]


def test_it_rejects_a_certificate_for_the_address_but_not_the_name(https_server, ca, ca_bundle):
    # The connection goes to 127.0.0.1, but the URL names localhost.
    srv = https_server(ca.issue_cert("127.0.0.1"))

    result = http_check(f"https://localhost:{srv.port}/", ca_bundle=ca_bundle)

    assert not result.is_ok
    assert result.failure_reason.startswith("TLS certificate of localhost not accepted:")
    assert "mismatch" in result.failure_reason


def test_it_reports_an_untrusted_certificate(https_server, ca):
    srv = https_server(ca.issue_cert("127.0.0.1"))

    # No ca_bundle: the system trust store knows nothing of the test CA.
    result = http_check(srv.url_for("/"))

    assert not result.is_ok
    assert result.failure_reason.startswith("TLS certificate of 127.0.0.1 not accepted:")
    assert "issuer" in result.failure_reason


def test_it_reports_an_expired_certificate(https_server, ca, ca_bundle):
    now = dt.datetime.now(dt.timezone.utc)
    srv = https_server(ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=60),
                                     not_after=now - dt.timedelta(days=1)))

    result = http_check(srv.url_for("/"), ca_bundle=ca_bundle)

    assert not result.is_ok
    assert result.failure_reason == "TLS certificate of 127.0.0.1 not accepted: certificate has expired"


def test_it_reports_a_hostname_mismatch(https_server, ca, ca_bundle):
    srv = https_server(ca.issue_cert("other.test"))

    result = http_check(srv.url_for("/"), ca_bundle=ca_bundle)

    assert not result.is_ok
    assert "not accepted" in result.failure_reason
    assert "mismatch" in result.failure_reason


def test_it_skips_verification_when_asked_and_still_reports_the_certificate(https_server, ca):
    now = dt.datetime.now(dt.timezone.utc)
    srv = https_server(ca.issue_cert("other.test", not_before=now - dt.timedelta(days=60),
                                     not_after=now - dt.timedelta(days=2)))

    result = http_check(srv.url_for("/"), verify_tls=False)

    assert result.is_ok, result.failure_reason
    info = result.metadata["certificateInfo"]
    assert info["daysRemaining"] in (-3, -2)
    assert info["subject"].startswith("OU=Testing cert")


def test_it_reports_an_unreadable_ca_bundle(https_server, ca, tmp_path):
    srv = https_server(ca.issue_cert("127.0.0.1"))

    result = http_check(srv.url_for("/"), ca_bundle=str(tmp_path / "missing.pem"))

    assert not result.is_ok
    assert result.failure_reason.startswith("cannot load CA bundle")


@pytest.mark.parametrize("options", [
    {"expected_status_codes": ["200-699"]},
    {"expected_status_codes": ["299-200"]},
    {"expected_status_codes": [99]},
    {"expected_status_codes": ["ok"]},
    {"expected_status_codes": []},
    {"method": "FETCH"},
    {"max_redirects": 21},
    {"max_body_bytes": 0},
    {"keyword_absent": True},
    {"method": "HEAD", "keyword": "x"},
    {"headers": {"Bad Header": "x"}},
    {"headers": {"X-Ok": "line\r\nInjected: 1"}},
    {"unknown": 1},
])
def test_it_rejects_invalid_options(options):
    with pytest.raises(ValidationError):
        CHECK_TYPES["http"].options_model.model_validate(options)


def test_it_stores_options_in_canonical_form():
    options = CHECK_TYPES["http"].options_model.model_validate(
        {"method": "post", "expected_status_codes": ["2xx", " 300 - 304 ", "404", 418], "keyword": ""})

    assert options.method == "POST"
    assert options.expected_status_codes == ["200-299", "300-304", 404, 418]
    assert options.keyword is None


# --- the response's head read without http.client (checks without a keyword) ---

@pytest.fixture
def raw_server():
    """A loopback server that answers each connection with the given raw
    bytes (then closes it), and keeps the requests it read."""
    listeners = []

    def start(answer: bytes):
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(5)
        requests: list[bytes] = []

        def serve():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                requests.append(data)
                conn.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        listeners.append((listener, thread))
        return f"http://127.0.0.1:{listener.getsockname()[1]}", requests

    yield start
    for listener, thread in listeners:
        listener.close()
        thread.join(timeout=5)


def test_it_skips_interim_responses(raw_server):
    url, _ = raw_server(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    result = http_check(url + "/")
    assert result.failure_reason == "HTTP 503, expected 200-299"
    assert result.metadata["httpStatus"] == 503


def test_it_reads_a_head_with_bare_line_feeds(raw_server):
    url, _ = raw_server(b"HTTP/1.0 301 Moved\nlocation: /elsewhere\n\nbody")
    result = http_check(url + "/", follow_redirects=False)
    assert result.failure_reason == "HTTP 301, expected 200-299 (redirect to /elsewhere)"


def test_it_reads_a_head_that_the_server_ends_by_closing(raw_server):
    url, _ = raw_server(b"HTTP/1.0 204 No Content\r\nServer: old")
    result = http_check(url + "/")
    assert result.is_ok, result.failure_reason
    assert result.metadata["httpStatus"] == 204


def test_it_reports_a_server_that_closes_without_answering(raw_server):
    url, _ = raw_server(b"")
    result = http_check(url + "/")
    assert result.failure_reason.startswith("invalid HTTP response from 127.0.0.1:")
    assert "RemoteDisconnected" in result.failure_reason


def test_it_reports_an_answer_that_is_not_http(raw_server):
    url, _ = raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    result = http_check(url + "/")
    assert result.failure_reason.startswith("invalid HTTP response from 127.0.0.1:")
    assert "BadStatusLine 'SSH-2.0-OpenSSH_9.6'" in result.failure_reason


def test_it_writes_the_request_as_http_client_would(raw_server):
    url, requests = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    result = http_check(url + "/a path?q=1", method="POST", headers={"X-Trace": "abc"})
    assert result.is_ok, result.failure_reason
    head = requests[0].decode("latin-1")
    lines = head.split("\r\n")
    assert lines[0] == "POST /a%20path?q=1 HTTP/1.1"
    assert f"Host: {url.split('//')[1]}" in lines
    assert "X-Trace: abc" in lines
    assert "Accept-Encoding: identity" in lines
    assert "Content-Length: 0" in lines  # an empty POST says so
    assert "Connection: close" in lines
