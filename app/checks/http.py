"""HTTP(S) check: status code, optional keyword, redirects and TLS certificate.

Built on sockets, ``ssl`` and ``http.client`` rather than ``requests``: a
check runs every few seconds for every endpoint, and the plain stdlib path
costs a fraction of the CPU. Each check opens a fresh connection, so what it
measures is what a new visitor would see (DNS, TCP, TLS and the response),
all within the check's timeout.

Most checks need only the status and the ``Location`` header: those write
the request and read the response's head themselves (``_request_bytes``,
``_response_head``), which halves the CPU of a check next to
``http.client``, whose email parser works through every header. A check
with a keyword reads the body through ``http.client`` (chunked and
compressed bodies, length limits).
"""
from __future__ import annotations

import base64
import functools
import http.client
import io
import os
import re
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import Field, field_validator, model_validator

from app import __version__
from app.checks.base import CheckFailed, CheckOptions, CheckResult, CheckSpec, elapsed_ms
from app.checks.resolve import connect, resolve

USER_AGENT = f"endpoint-monitor/{__version__}"
# Kept as they are in the location's part of the User-Agent; anything else
# (parentheses, which would end the comment, and non-ASCII, which a header
# cannot carry) is percent-encoded.
_LOCATION_SAFE = " -_.,:;/@+'&"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Sent only to the origin the user configured: a redirect to another host
# must not leak credentials to it.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# Characters left as they are when a path or Location is percent-encoded:
# everything RFC 3986 allows in a request target, plus existing escapes.
_URL_SAFE = "/?#[]@!$&'()*+,;=:-._~%"
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")
_STATUS_CLASS = re.compile(r"^\s*([1-5])xx\s*$", re.IGNORECASE)
# The most a response's head may take (status line and headers), as
# http.client allows: 100 headers of up to 64 KiB in all.
MAX_HEAD_BYTES = 65536
MAX_HEADERS = 100
# Methods that carry a body, so an empty one is sent as "Content-Length: 0"
# (what http.client does).
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _status_range(item: int | str) -> tuple[int, int]:
    """``404`` -> (404, 404); ``"200-299"`` or ``"2xx"`` -> (200, 299)."""
    if isinstance(item, int):
        low = high = item
    elif match := _STATUS_CLASS.match(item):
        low = int(match.group(1)) * 100
        high = low + 99
    elif match := _STATUS_RANGE.match(item):
        low = int(match.group(1))
        high = int(match.group(2) or low)
    else:
        raise ValueError(f"{item!r} is not a status code, a range like '200-299' or a class like '2xx'")
    if not (100 <= low <= 599 and 100 <= high <= 599):
        raise ValueError(f"{item!r}: status codes must be between 100 and 599")
    if low > high:
        raise ValueError(f"{item!r}: range starts after it ends")
    return low, high


class Options(CheckOptions):
    """Settings of an HTTP(S) check; ``spec.target`` is the URL."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expected_status_codes: list[int | str] = Field(default_factory=lambda: ["200-299"], min_length=1)
    keyword: str | None = None
    keyword_absent: bool = False
    follow_redirects: bool = True
    max_redirects: int = Field(10, ge=0, le=20)
    verify_tls: bool = True
    # A PEM file that replaces the system trust store (a private CA).
    ca_bundle: str | None = None
    max_body_bytes: int = Field(1_000_000, ge=1, le=100_000_000)

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value):
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("keyword", "ca_bundle", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        # Forms send "" for an empty field; an empty keyword would match anything.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"the value of header {name!r} contains a line break")
        return headers

    @field_validator("expected_status_codes")
    @classmethod
    def _valid_status_codes(cls, codes: list[int | str]) -> list[int | str]:
        # Stored in one canonical spelling, so "2xx" and "200 - 299" compare equal.
        canonical: list[int | str] = []
        for item in codes:
            low, high = _status_range(item)
            canonical.append(low if low == high else f"{low}-{high}")
        return canonical

    @model_validator(mode="after")
    def _keyword_is_usable(self) -> Options:
        if self.keyword_absent and self.keyword is None:
            raise ValueError("keyword_absent needs a keyword")
        if self.keyword is not None and self.method == "HEAD":
            raise ValueError("a keyword cannot be checked with HEAD: the response has no body")
        return self


@dataclass(frozen=True)
class _Target:
    """One request's destination, split the way a connection needs it."""

    scheme: str
    host: str  # ASCII (IDNA) form, IPv6 without brackets
    port: int
    request_target: str  # path and query, percent-encoded
    basic_auth: str | None  # from user:password@ in the URL
    display_url: str  # the URL without credentials, for metadata and reasons

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@dataclass
class _Response:
    status: int
    location: str | None
    body: bytes | None
    body_truncated: bool
    charset: str | None
    cert_der: bytes | None


class _DeadlineSocket:
    """A socket whose every send and receive is bounded by the check's deadline.

    A per-call timeout alone lets a server that trickles a byte at a time
    hold a check open indefinitely; re-arming the timeout with what is left
    of the deadline before each call caps the whole exchange. ``http.client``
    only needs ``sendall``, ``makefile`` and ``close``.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        remaining = self._deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(remaining)

    def sendall(self, data) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def recv(self, size: int) -> bytes:
        self._arm()
        return self._sock.recv(size)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        # http.client closes its socket as soon as it sees "Connection: close",
        # before the body is read; a real socket survives that through
        # makefile's reference count. The check closes the real socket itself.
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)


def check(spec: CheckSpec) -> CheckResult:
    """Request ``spec.target`` (a URL), following redirects, and judge the final response."""
    options: Options = spec.options
    started = time.perf_counter()
    deadline = started + spec.timeout
    target = _parse_url(spec.target)
    method = options.method
    body = options.body.encode("utf-8") if options.body is not None else None
    headers = _request_headers(options.headers, user_agent(spec.location))
    if target.basic_auth is not None:
        headers.setdefault("authorization", ("Authorization", target.basic_auth))
    redirects = 0
    cert_info = None
    while True:
        response = _exchange(target, method, headers, body, options, spec.timeout, deadline,
                             read_body=options.keyword is not None)
        # The certificate of the first HTTPS hop is the one of the endpoint
        # the user configured, so its expiry is the one worth reporting.
        if cert_info is None and response.cert_der is not None:
            cert_info = _certificate_info(response.cert_der)
        if not (options.follow_redirects and response.status in REDIRECT_STATUSES and response.location):
            break
        redirects += 1
        if redirects > options.max_redirects:
            raise CheckFailed(f"too many redirects (more than {options.max_redirects}), "
                              f"last one from {target.display_url}")
        next_target = _parse_url(urljoin(target.display_url, response.location), redirected=True)
        if next_target.origin != target.origin:
            headers = {k: v for k, v in headers.items() if k not in CREDENTIAL_HEADERS}
        if next_target.basic_auth is not None:
            headers["authorization"] = ("Authorization", next_target.basic_auth)
        if response.status in (301, 302, 303) and method != "HEAD":
            # What browsers do: the redirected request is a plain GET.
            method, body = "GET", None
            headers = {k: v for k, v in headers.items() if k not in ("content-type", "content-length")}
        target = next_target

    took = elapsed_ms(started)
    metadata = {"httpStatus": response.status, "url": target.display_url, "redirects": redirects}
    if cert_info is not None:
        metadata["certificateInfo"] = cert_info
    reason = _status_problem(response.status, options.expected_status_codes)
    if reason is not None and response.status in REDIRECT_STATUSES and response.location:
        reason += f" (redirect to {response.location})"
    if reason is None and options.keyword is not None:
        reason = _keyword_problem(response, options.keyword, options.keyword_absent, options.max_body_bytes)
    return CheckResult(is_ok=reason is None, check_type="http", response_time_ms=took,
                       failure_reason=reason, metadata=metadata)


def _parse_url(url: str, *, redirected: bool = False) -> _Target:
    """Split an http(s) URL, or fail the check with what is wrong with it."""
    what = "redirect to" if redirected else "invalid URL"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise CheckFailed(f"{what} {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CheckFailed(f"{what} {url!r}: only http:// and https:// URLs can be checked")
    host = parts.hostname
    if not host:
        raise CheckFailed(f"{what} {url!r}: no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise CheckFailed(f"{what} {url!r}: host is not a valid domain name") from None
    path = quote(parts.path or "/", safe=_URL_SAFE)
    query = quote(parts.query, safe=_URL_SAFE)
    basic_auth = None
    netloc = parts.netloc
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        basic_auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        netloc = netloc.rpartition("@")[2]
    return _Target(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        request_target=path + ("?" + query if query else ""),
        basic_auth=basic_auth,
        display_url=urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")),
    )


def user_agent(location: str | None) -> str:
    """The User-Agent of a check from ``location``: it names the location, so
    a target's operator (or a test target) can tell the probes apart."""
    if not location:
        return USER_AGENT
    return f"{USER_AGENT} (location {quote(location, safe=_LOCATION_SAFE)})"


def _request_headers(user_headers: dict[str, str], agent: str = USER_AGENT) -> dict[str, tuple[str, str]]:
    """``{lower-case name: (name as given, value)}``; the user's replace the defaults."""
    headers = {
        "user-agent": ("User-Agent", agent),
        "accept": ("Accept", "*/*"),
        # One request per connection: say so, so the server closes promptly.
        "connection": ("Connection", "close"),
    }
    headers.update({name.lower(): (name, value) for name, value in user_headers.items()})
    return headers


@functools.lru_cache(maxsize=16)
def _tls_context(verify: bool, ca_bundle: str | None, ca_bundle_mtime: float | None) -> ssl.SSLContext:
    # Loading the system trust store costs milliseconds of CPU; doing it once
    # per setting (and once per change of the CA file) keeps checks cheap.
    # The mtime is part of the key only so that a replaced bundle is reloaded.
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_bundle)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _context_for(options: Options) -> ssl.SSLContext:
    if not options.verify_tls or options.ca_bundle is None:
        return _tls_context(options.verify_tls, None, None)
    try:
        mtime = os.stat(options.ca_bundle).st_mtime
        return _tls_context(True, options.ca_bundle, mtime)
    except (OSError, ssl.SSLError) as exc:
        raise CheckFailed(f"cannot load CA bundle {options.ca_bundle}: {exc}") from None


def _exchange(target: _Target, method: str, headers: dict[str, tuple[str, str]], body: bytes | None,
              options: Options, timeout: float, deadline: float, *, read_body: bool) -> _Response:
    """One request on a fresh connection; transport errors become ``CheckFailed``."""
    where = f"{target.host}:{target.port}"
    phase = f"connecting to {where}"
    sock = None
    try:
        addresses = resolve(target.host, target.port, deadline=deadline, timeout=timeout)
        sock = connect(addresses, deadline)
        cert_der = None
        if target.scheme == "https":
            phase = f"in the TLS handshake with {where}"
            context = _context_for(options)
            sock.settimeout(max(deadline - time.perf_counter(), 0.001))
            sock = context.wrap_socket(sock, server_hostname=target.host)
            cert_der = sock.getpeercert(binary_form=True)
        phase = f"waiting for the response from {where}"
        bounded = _DeadlineSocket(sock, deadline)
        request_headers = dict(headers.values())
        if "host" not in headers:
            request_headers["Host"] = _host_header(target)
        if not read_body or method == "HEAD":
            bounded.sendall(_request_bytes(method, target.request_target, request_headers, headers, body))
            status, location = _response_head(bounded, where)
            return _Response(status, location, None, False, None, cert_der)
        conn = http.client.HTTPConnection(target.host, target.port)
        conn.sock = bounded
        conn.request(method, target.request_target, body=body, headers=request_headers)
        response = conn.getresponse()
        data = None
        truncated = False
        charset = None
        if read_body and method != "HEAD":
            phase = f"reading the body from {where}"
            charset = response.msg.get_content_charset()
            data, truncated = _read_body(response, response.getheader("content-encoding"),
                                         options.max_body_bytes)
        return _Response(response.status, response.getheader("location"), data, truncated, charset, cert_der)
    except CheckFailed:
        raise
    except TimeoutError:
        raise CheckFailed(f"timed out after {timeout:g} s {phase}") from None
    except ssl.SSLCertVerificationError as exc:
        raise CheckFailed(f"TLS certificate of {target.host} not accepted: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise CheckFailed(f"TLS error {phase}: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise CheckFailed(f"connection refused by {where}") from None
    except http.client.HTTPException as exc:
        # RemoteDisconnected and friends: the server answered, but not with valid HTTP.
        raise CheckFailed(f"invalid HTTP response from {where}: {type(exc).__name__} {exc}".rstrip()) from None
    except OSError as exc:
        raise CheckFailed(f"connection error {phase}: {exc.strerror or exc}") from None
    finally:
        if sock is not None:
            sock.close()


def _request_bytes(method: str, request_target: str, request_headers: dict[str, str],
                   headers: dict[str, tuple[str, str]], body: bytes | None) -> bytes:
    """The request as ``http.client`` would write it: the same headers,
    ``Accept-Encoding: identity`` unless the user set one, and a
    ``Content-Length`` for a body (0 for an empty POST, PUT or PATCH)."""
    lines = [f"{method} {request_target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request_headers.items()]
    if "accept-encoding" not in headers:
        lines.append("Accept-Encoding: identity")
    if "content-length" not in headers and "transfer-encoding" not in headers:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method in _METHODS_WITH_BODY:
            lines.append("Content-Length: 0")
    # Header values are Latin-1 on the wire, as http.client sends them.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _response_head(sock: _DeadlineSocket, where: str) -> tuple[int, str | None]:
    """The status and ``Location`` of the response, read up to the end of
    its head; interim 1xx responses are skipped, as http.client does."""
    data = b""
    start = 0  # where the current response's head begins in ``data``
    while True:
        end = data.find(b"\n\r\n", start)
        bare = data.find(b"\n\n", start)  # lines may end in a bare LF
        if bare != -1 and (end == -1 or bare < end):
            end, after = bare, bare + 2
        else:
            after = end + 3
        if end == -1:
            if len(data) - start > MAX_HEAD_BYTES:
                raise CheckFailed(f"invalid HTTP response from {where}: its head is over {MAX_HEAD_BYTES} bytes")
            chunk = sock.recv(65536)
            if chunk:
                data += chunk
                continue
            if len(data) == start:
                raise CheckFailed(f"invalid HTTP response from {where}: "
                                  "RemoteDisconnected Remote end closed connection without response")
            end = after = len(data)  # closed right after the headers: what came is the head
        lines = data[start:end].decode("iso-8859-1").split("\n")
        status = _status_of(lines[0].strip(), where)
        if 100 <= status < 200 and status != 101:
            start = after  # 100 Continue, 103 Early Hints: the real answer follows
            continue
        if len(lines) > MAX_HEADERS + 1:
            raise CheckFailed(f"invalid HTTP response from {where}: got more than {MAX_HEADERS} headers")
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "location":
                return status, value.strip()
        return status, None


def _status_of(line: str, where: str) -> int:
    """The code of a status line such as ``HTTP/1.1 200 OK``."""
    version, _, rest = line.partition(" ")
    code = rest.lstrip().partition(" ")[0]
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit() or int(code) < 100:
        raise CheckFailed(f"invalid HTTP response from {where}: BadStatusLine {line!r}")
    return int(code)


def _host_header(target: _Target) -> str:
    # http.client would add ":443" for HTTPS (it only knows port 80 as default).
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _read_body(response: http.client.HTTPResponse, encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the (decoded) body, and whether there was more."""
    encoding = (encoding or "").strip().lower()
    # Decoded only when the user asked for compression in their headers (we
    # send no Accept-Encoding of our own); bounded by ``limit`` whatever the ratio.
    decoder = zlib.decompressobj(wbits=47) if encoding in ("gzip", "x-gzip", "deflate") else None  # 47: zlib or gzip
    out = bytearray()
    while len(out) <= limit:
        want = limit + 1 - len(out)
        chunk = response.read(min(want, 65536) if decoder is None else 65536)
        if not chunk:
            break
        if decoder is None:
            out += chunk
            continue
        try:
            out += decoder.decompress(chunk, want)
        except zlib.error as exc:
            raise CheckFailed(f"cannot decode {encoding} body: {exc}") from None
    return bytes(out[:limit]), len(out) > limit


def _status_problem(status: int, expected: list[int | str]) -> str | None:
    for item in expected:
        low, high = _status_range(item)
        if low <= status <= high:
            return None
    return f"HTTP {status}, expected {', '.join(str(item) for item in expected)}"


def _keyword_problem(response: _Response, keyword: str, must_be_absent: bool, limit: int) -> str | None:
    try:
        needle = keyword.encode(response.charset or "utf-8")
    except (LookupError, UnicodeEncodeError):
        needle = keyword.encode("utf-8")
    found = needle in (response.body or b"")
    if must_be_absent:
        return f"keyword {keyword!r} found" if found else None
    if found:
        return None
    where = f" in the first {limit} bytes" if response.body_truncated else ""
    return f"keyword {keyword!r} not found{where}"


def _name_text(name: x509.Name) -> str:
    common_names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        return str(common_names[0].value)
    return name.rfc4514_string()


@functools.lru_cache(maxsize=256)
def _certificate_fields(der: bytes) -> tuple[str, str, datetime, datetime, str]:
    # Parsed from DER with cryptography, not ``getpeercert()``'s dict, which
    # is empty when verification is off; cached because the same certificate
    # is seen on every check of an endpoint.
    cert = x509.load_der_x509_certificate(der)
    return (_name_text(cert.subject), _name_text(cert.issuer), cert.not_valid_before_utc,
            cert.not_valid_after_utc, format(cert.serial_number, "X"))


def _certificate_info(der: bytes) -> dict:
    """The server certificate's fields for ``metadata.certificateInfo``."""
    try:
        subject, issuer, valid_from, valid_to, serial = _certificate_fields(der)
    except ValueError as exc:
        return {"error": f"cannot parse certificate: {exc}"}
    return {
        "subject": subject,
        "issuer": issuer,
        "validFrom": valid_from.isoformat(),
        "validTo": valid_to.isoformat(),
        "daysRemaining": (valid_to - datetime.now(timezone.utc)).days,
        "serialNumber": serial,
    }
