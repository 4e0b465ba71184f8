"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""
from __future__ import annotations

import email
import email.policy
import threading
import time
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.peers.ports import reserve_port


class SmtpServer:
    """Accepts every message (no TLS, no auth) and keeps it, parsed."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.envelopes: list = []
        self._lock = threading.Lock()
        self.port = reserve_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.envelopes.append(envelope)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def start(self) -> "SmtpServer":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def url(self, *, to: str = "ops@example.org", sender: str = "monitor@example.org") -> str:
        """An apprise URL for plain SMTP (no TLS) to this server."""
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")

    @staticmethod
    def text(message: EmailMessage) -> str:
        """The plain-text body."""
        part = message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""
