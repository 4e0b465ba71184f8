"""The dashboard's heartbeat bar: an endpoint's latest results as small
coloured bars, newest on the right, each titled with its time, location
and outcome. Plain markup written on the server: no script, no SVG."""
from __future__ import annotations

from markupsafe import Markup, escape

from app.services.dashboard import HEARTBEATS, Heartbeat


def _title(beat: Heartbeat) -> str:
    outcome = (f"{beat.response_time_ms:.0f} ms" if beat.is_ok and beat.response_time_ms is not None
               else "up" if beat.is_ok else f"down: {beat.failure_reason or 'failed'}")
    return f"{beat.checked_at:%Y-%m-%d %H:%M:%S} UTC · {beat.location} · {outcome}"


def heartbeat_bar(beats: list[Heartbeat], slots: int = HEARTBEATS) -> Markup:
    """``beats`` (oldest first) as a bar of ``slots`` marks, the missing ones
    empty on the left."""
    beats = beats[-slots:]
    failed = sum(1 for beat in beats if not beat.is_ok)
    label = (f"last {len(beats)} results, {failed} failed" if beats else "no recent results")
    parts = [f'<span class="beats" role="img" aria-label="{label}">',
             '<span class="beat none"></span>' * (slots - len(beats))]
    for beat in beats:
        parts.append(f'<span class="beat {"up" if beat.is_ok else "down"}" title="{escape(_title(beat))}"></span>')
    parts.append("</span>")
    return Markup("".join(parts))
