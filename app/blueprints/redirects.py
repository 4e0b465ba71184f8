"""Where a form may send the browser next: only paths on this site."""
from urllib.parse import urlsplit


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None.

    Browsers drop tabs and newlines from URLs and treat a backslash as a
    slash, so ``/\\t/evil.example`` would leave the site: any control
    character or backslash disqualifies a target, as does a scheme or host.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
