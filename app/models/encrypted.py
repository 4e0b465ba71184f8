"""Column types that keep secrets encrypted at rest (see ``app.secret_box``).

Readers and writers of these columns see plain values; only the database
holds Fernet tokens. Each type knows which parts of its value are secret:

- ``EncryptedJSON``: the whole value (a notification service's config,
  whose secret fields depend on its kind). Stored as a JSON string token.
- ``EncryptedText``: the whole string (the dependent's sync token).
- ``CredentialsURL``: an endpoint's target; only the ``user:password``
  part of a URL becomes a token (``https://<token>@host/path``), so the
  scheme and host stay readable to SQL (HTTPS filters, search).
- ``OptionsWithSecrets``: an endpoint's options; the secret options and
  secret header values become tokens, the rest stays readable.

A value stored before encryption existed (plain text, not shaped like a
token) is read as it is, so a database whose migration has not run yet
keeps working; the migration and ``./monitor secrets rotate`` encrypt it.
A token that does not decrypt raises ``SecretUnreadable``: never garbage.

``seal`` / ``unseal`` / ``secrets_in`` are also used on raw values by
``app.services.secrets_at_rest`` (migration and rotation).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.types import TypeDecorator

from app.secret_box import SecretBox, current_box, looks_encrypted


class EncryptedType(TypeDecorator):
    """Base: seal on the way in, unseal on the way out."""

    cache_ok = True
    # What the value is, for an error that names it.
    what = "a secret"

    def process_bind_param(self, value, dialect):
        return None if value is None else self.seal(value, current_box())

    def process_result_value(self, value, dialect):
        return None if value is None else self.unseal(value, current_box())

    def seal(self, value, box: SecretBox):
        """The value as stored: its secret parts encrypted under the first key."""
        raise NotImplementedError

    def unseal(self, value, box: SecretBox):
        """The plain value of a stored one (plain text stored earlier passes)."""
        raise NotImplementedError

    def secrets_in(self, stored) -> tuple[int, int]:
        """How many secret parts a stored value has, and how many of them are plain text."""
        raise NotImplementedError


class EncryptedJSON(EncryptedType):
    """A JSON value encrypted whole."""

    cache_ok = True
    impl = JSON
    what = "a notification service's settings"

    def seal(self, value, box):
        return box.encrypt(json.dumps(value, separators=(",", ":")))

    def unseal(self, value, box):
        if looks_encrypted(value):
            return json.loads(box.decrypt(value, what=self.what))
        return value

    def secrets_in(self, stored):
        if looks_encrypted(stored):
            return 1, 0
        return (1, 1) if stored else (0, 0)


class EncryptedText(EncryptedType):
    """A string encrypted whole."""

    cache_ok = True
    impl = Text
    what = "this instance's sync token"

    def seal(self, value, box):
        return box.encrypt(value)

    def unseal(self, value, box):
        return box.decrypt(value, what=self.what) if looks_encrypted(value) else value

    def secrets_in(self, stored):
        if looks_encrypted(stored):
            return 1, 0
        return (1, 1) if stored else (0, 0)


class CredentialsURL(EncryptedType):
    """A target whose URL credentials (``user:password@``) are encrypted."""

    cache_ok = True
    impl = String
    what = "an endpoint's URL credentials"

    def coerce_compared_value(self, op, value):
        # LIKE 'https:%' and searches compare plain text, never a fresh token.
        return String()

    def seal(self, value, box):
        parts = _userinfo(value)
        if parts is None:
            return value
        head, userinfo, tail = parts
        return head + box.encrypt(userinfo) + tail

    def unseal(self, value, box):
        parts = _userinfo(value)
        if parts is None or not looks_encrypted(parts[1]):
            return value
        head, token, tail = parts
        return head + box.decrypt(token, what=self.what) + tail

    def secrets_in(self, stored):
        parts = _userinfo(stored)
        if parts is None:
            return 0, 0
        return 1, 0 if looks_encrypted(parts[1]) else 1


class OptionsWithSecrets(EncryptedType):
    """Check options whose secret values (SASL password, credential headers) are encrypted."""

    cache_ok = True
    impl = JSON
    what = "an endpoint's secret option"

    def seal(self, value, box):
        return _map_strings(value, lambda text, secret: box.encrypt(text) if secret else text)

    def unseal(self, value, box):
        # Every value shaped like a token is decrypted, whatever its name:
        # a header that stops counting as secret must not come back as a token.
        return _map_strings(value, lambda text, secret: (box.decrypt(text, what=self.what)
                                                         if looks_encrypted(text) else text))

    def secrets_in(self, stored):
        seen = []
        _map_strings(stored, lambda text, secret: seen.append((looks_encrypted(text), secret)) or text)
        return (sum(1 for encrypted, secret in seen if encrypted or secret),
                sum(1 for encrypted, secret in seen if secret and not encrypted))


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user:password, @rest)`` of a URL with credentials, else None."""
    if not isinstance(url, str):
        return None
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found >= 0:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at <= start:
        return None  # none, or an empty user part
    return url[:start], url[start:at], url[at:]


def _map_strings(options: Any, change) -> Any:
    """``options`` with each non-empty string at the top level and among the
    headers replaced by ``change(text, secret)``; ``secret``: whether its
    name makes it a secret (``app.checks.SECRET_OPTIONS``, ``is_secret_header``)."""
    from app.checks import SECRET_OPTIONS, is_secret_header

    if not isinstance(options, dict):
        return options
    changed = {}
    for name, value in options.items():
        if name == "headers" and isinstance(value, dict):
            value = {header: (change(text, is_secret_header(str(header))) if isinstance(text, str) and text
                              else text)
                     for header, text in value.items()}
        elif isinstance(value, str) and value:
            value = change(value, name in SECRET_OPTIONS)
        changed[name] = value
    return changed
