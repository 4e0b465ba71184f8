"""Response-time charts drawn on the server as inline SVG (no chart library,
no script): the detail page's chart."""
from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape

from app.services.history import Bucket


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _segments(points: list[tuple[float, float] | None]) -> list[str]:
    """Polyline point lists, broken where there is no data."""
    segments, current = [], []
    for point in points:
        if point is None:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(f"{point[0]:.1f},{point[1]:.1f}")
    if current:
        segments.append(current)
    return [" ".join(s) for s in segments]


def _time_label(moment: datetime, span_seconds: float) -> str:
    return moment.strftime("%H:%M" if span_seconds <= 86400 else "%d %b %H:%M")


def response_chart(buckets: list[Bucket], *, width: int = 800, height: int = 240) -> Markup:
    """Average (line) and maximum (shade) response time per bucket, with
    failed checks marked in red along the bottom."""
    left, right, top, bottom = 48, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    averages = [b.tally.average_ms for b in buckets]
    maxima = [b.tally.response_ms_max for b in buckets]
    measured = [v for v in maxima + averages if v is not None]
    y_max = _nice_max(max(measured) if measured else 1.0)
    n = max(len(buckets) - 1, 1)

    def x(i):
        return left + plot_w * i / n

    def y(value):
        return top + plot_h - plot_h * value / y_max

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="response time chart">']
    for fraction in (0, 0.5, 1):
        value = y_max * fraction
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
                     f'<text class="axis" x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g} ms</text>')
    for segment in _segments([None if v is None else (x(i), y(v)) for i, v in enumerate(maxima)]):
        parts.append(f'<polyline class="max" points="{segment}"/>')
    for segment in _segments([None if v is None else (x(i), y(v)) for i, v in enumerate(averages)]):
        if " " in segment:
            parts.append(f'<polyline class="avg" points="{segment}"/>')
        else:
            cx, cy = segment.split(",")
            parts.append(f'<circle class="avg" cx="{cx}" cy="{cy}" r="2"/>')
    bar_w = max(plot_w / max(len(buckets), 1), 1.5)
    for i, bucket in enumerate(buckets):
        failed = bucket.tally.checks - bucket.tally.ok_checks
        if failed:
            title = escape(f"{bucket.start:%Y-%m-%d %H:%M} UTC: {failed} of {bucket.tally.checks} checks failed")
            parts.append(f'<rect class="fail" x="{x(i) - bar_w / 2:.1f}" y="{top + plot_h - 6}" '
                         f'width="{bar_w:.1f}" height="6"><title>{title}</title></rect>')
    if buckets:
        span = (buckets[-1].start - buckets[0].start).total_seconds()
        for i in (0, len(buckets) // 2, len(buckets) - 1):
            anchor = "start" if i == 0 else "end" if i == len(buckets) - 1 else "middle"
            parts.append(f'<text class="axis" x="{x(i):.1f}" y="{height - 8}" text-anchor="{anchor}">'
                         f'{_time_label(buckets[i].start, span)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
