"""Secrets at rest: Fernet encryption under this instance's keys.

The keys come from ``SECRETS_KEY`` (one or more Fernet keys separated by
commas) or, when that is unset, from ``<data_dir>/secrets_key``, generated
at first start (``app.config.secrets_keys_for``). The first key encrypts;
every key decrypts (``MultiFernet``), so keys can be rotated: put the new
key first, run ``./monitor secrets rotate``, then drop the old one.

Keys are per instance: a secret replicated to a failover candidate crosses
the sync API in plain text (TLS in production) and the candidate stores it
under its own key.

The column types in ``app.models.encrypted`` are the only readers and
writers of ciphertext; ``current_box`` gives them the box of the app in use.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

EXTENSION = "secret_box"
# version byte, timestamp, IV, HMAC around at least one AES block
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32
_FERNET_VERSION = 0x80


class SecretUnreadable(RuntimeError):
    """A stored secret does not decrypt under any key this instance holds."""


class SecretBox:
    """Encrypts under the first key, decrypts under any of them."""

    def __init__(self, keys: Sequence[str], source: str):
        if not keys:
            raise ValueError("a secret box needs at least one key")
        self.keys = tuple(keys)
        # Where the keys came from, for error messages: never the keys.
        self.source = source
        self._fernet = MultiFernet([Fernet(key) for key in self.keys])

    def encrypt(self, plaintext: str) -> str:
        """A Fernet token (text) of ``plaintext`` under the first key."""
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str, *, what: str = "a secret") -> str:
        """The plaintext of ``token``, or ``SecretUnreadable`` naming the keys' source."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(
                f"{what} stored in the database cannot be decrypted with {self.source}: it was "
                "encrypted under another key. Start with the key it was written with (during a "
                "rotation, SECRETS_KEY lists the new key first and the old ones after it)"
            ) from None

    def rotate(self, token: str, *, what: str = "a secret") -> str:
        """``token`` re-encrypted under the first key."""
        return self.encrypt(self.decrypt(token, what=what))


def looks_encrypted(value) -> bool:
    """Whether ``value`` has the shape of a Fernet token (not whether it decrypts).

    Values stored before encryption was introduced are read as they are;
    a value shaped like a token is decrypted, and one that does not
    decrypt is an error, never handed on as if it were the secret.
    """
    if not isinstance(value, str) or len(value) < 100 or len(value) % 4:
        return False
    try:
        raw = base64.b64decode(value, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw[0] == _FERNET_VERSION and len(raw) > _TOKEN_OVERHEAD and (len(raw) - _TOKEN_OVERHEAD) % 16 == 0


def init_app(app, keys: Sequence[str], source: str) -> None:
    """Give ``app`` its box; the column types find it through ``current_box``."""
    app.extensions[EXTENSION] = SecretBox(keys, source)


def current_box() -> SecretBox:
    """The box of the app in use (each app has its own keys, as each instance does)."""
    return current_app.extensions[EXTENSION]


def generate_key() -> str:
    """A new Fernet key, as SECRETS_KEY takes it."""
    return Fernet.generate_key().decode("ascii")


def is_key(value: str) -> bool:
    """Whether ``value`` is a Fernet key (32 url-safe base64-encoded bytes)."""
    try:
        Fernet(value)
    except (ValueError, TypeError, binascii.Error):
        return False
    return True
