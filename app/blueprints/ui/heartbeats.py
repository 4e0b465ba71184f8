"""The dashboard's heartbeat bar: an endpoint's latest results as small
coloured bars, newest on the right, each titled with its time, location
and outcome. Plain markup written on the server: no script, no SVG."""
from __future__ import annotations

from markupsafe import Markup, escape

from app.services.dashboard import HEARTBEATS, Heartbeat


def heartbeat_bar(beats: list[Heartbeat], slots: int = HEARTBEATS) -> Markup:
    """``beats`` (oldest first) as a bar of ``slots`` marks, the missing ones
    empty on the left."""
    beats = beats[-slots:]
    failed = sum(1 for beat in beats if not beat.is_ok)
    label = f"last {len(beats)} results, {failed} failed" if beats else "no recent results"
    parts = [f'<span class="beats" role="img" aria-label="{label}">',
             '<span class="beat none"></span>' * (slots - len(beats))]
    locations: dict[str, str] = {}  # a page holds thousands of beats from a few locations
    for beat in beats:
        where = locations.get(beat.location)
        if where is None:
            where = locations[beat.location] = str(escape(beat.location))
        when = beat.checked_at.isoformat(sep=" ")[:19]
        if beat.is_ok:
            outcome = "up" if beat.response_time_ms is None else f"{beat.response_time_ms:.0f} ms"
            parts.append(f'<span class="beat up" title="{when} UTC · {where} · {outcome}"></span>')
        else:
            reason = escape(beat.failure_reason or "failed")
            parts.append(f'<span class="beat down" title="{when} UTC · {where} · down: {reason}"></span>')
    parts.append("</span>")
    return Markup("".join(parts))
