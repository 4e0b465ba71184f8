"""Response-time charts drawn on the server as inline SVG (no chart library,
no script): the detail page's chart (one series per location, with its
legend) and its consensus timeline."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from app.services.history import Location, RangeChart


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


# Series colours are app.css's .series.s0 to .s7; past eight locations they
# repeat, dashed.
PALETTE_SIZE = 8
# Chart and timeline share this horizontal geometry, so their times line up.
_LEFT, _RIGHT, _WIDTH = 48, 8, 800
# A timeline stretch narrower than this many units is merged with its
# neighbours (shown in the worst status among them).
_MIN_CELL = 3.0
_SEVERITY = {"DOWN": 4, "PARTIAL": 3, "UP": 2, "PENDING": 1, None: 0}


def series_class(location: Location) -> str:
    """The CSS classes that colour a location's line, dot and swatch."""
    dashed = " dashed" if location.colour >= PALETTE_SIZE else ""
    return f"series s{location.colour % PALETTE_SIZE}{dashed}"


def swatch(location: Location) -> Markup:
    """A small square in the location's colour, for legends and tables."""
    return Markup(f'<span class="swatch {series_class(location)}" aria-hidden="true"></span>')


def _time_axis(view: RangeChart):
    plot_w = _WIDTH - _LEFT - _RIGHT
    seconds = (view.end - view.start).total_seconds() or 1.0

    def x(moment: datetime) -> float:
        return _LEFT + plot_w * min(max((moment - view.start).total_seconds() / seconds, 0.0), 1.0)
    return x


def location_chart(view: RangeChart, *, height: int = 240) -> Markup:
    """Average response time per bucket, one line per location in its own
    colour, with failed checks marked in red along the bottom."""
    top, bottom = 10, 26
    plot_h = height - top - bottom
    x = _time_axis(view)
    half = view.range.bucket / 2
    measured = [b.tally.average_ms for s in view.series for b in s.buckets if b.tally.average_ms is not None]
    y_max = _nice_max(max(measured) if measured else 1.0)

    def y(value):
        return top + plot_h - plot_h * value / y_max

    names = ", ".join(s.location.name for s in view.series) or "no locations yet"
    parts = [f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
             f'aria-label="{escape(f"response time per location: {names}")}">']
    for fraction in (0, 0.5, 1):
        value = y_max * fraction
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}"/><text class="axis" x="{_LEFT - 4}" y="{y(value) + 4:.1f}" '
                     f'text-anchor="end">{value:g} ms</text>')
    for series in view.series:
        css, title = series_class(series.location), f"<title>{escape(series.location.name)}</title>"
        points = [None if b.tally.average_ms is None else (x(b.start + half), y(b.tally.average_ms))
                  for b in series.buckets]
        for segment in _segments(points):
            if " " in segment:
                parts.append(f'<polyline class="{css}" points="{segment}">{title}</polyline>')
            else:
                cx, cy = segment.split(",")
                parts.append(f'<circle class="{css}" cx="{cx}" cy="{cy}" r="2.5">{title}</circle>')
    if not measured:
        parts.append(f'<text class="axis" x="{_WIDTH / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
                     f'no response times in this range</text>')
    _failure_marks(parts, view, x, top + plot_h)
    for moment, anchor in ((view.start, "start"), (view.start + (view.end - view.start) / 2, "middle"),
                           (view.end, "end")):
        parts.append(f'<text class="axis" x="{x(moment):.1f}" y="{height - 8}" text-anchor="{anchor}">'
                     f'{_time_label(moment, (view.end - view.start).total_seconds())}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _failure_marks(parts: list[str], view: RangeChart, x, baseline: float) -> None:
    if not view.series:
        return
    for index, bucket in enumerate(view.series[0].buckets):
        failed = [(s.location.name, s.buckets[index].tally) for s in view.series
                  if s.buckets[index].tally.checks > s.buckets[index].tally.ok_checks]
        if not failed:
            continue
        left, right = x(bucket.start), x(bucket.start + view.range.bucket)
        detail = ", ".join(f"{name} {t.checks - t.ok_checks} of {t.checks}" for name, t in failed)
        title = escape(f"{bucket.start:%Y-%m-%d %H:%M} UTC: failed checks: {detail}")
        parts.append(f'<rect class="fail" x="{left:.1f}" y="{baseline - 6}" width="{max(right - left, 1.5):.1f}" '
                     f'height="6"><title>{title}</title></rect>')


def location_legend(view: RangeChart) -> Markup:
    """The chart's legend: each location's colour and name, with its average
    response time and share of checks passed over the range."""
    items = []
    for series in view.series:
        total = series.total
        if total.checks:
            average = f"{total.average_ms:.0f} ms avg · " if total.average_ms is not None else ""
            facts = f"{average}{total.uptime:.2f} % of {total.checks} checks passed"
        else:
            facts = "no results in this range"
        items.append(f'<li>{swatch(series.location)}<span class="name">{escape(series.location.name)}</span> '
                     f'<span class="muted">{facts}</span></li>')
    return Markup(f'<ul class="chart-legend" aria-label="locations">{"".join(items)}</ul>')


def _span_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes < 2880 else f"{minutes // 1440} d {minutes % 1440 // 60} h"


@dataclass
class _Cell:
    """A drawn piece of the timeline: one stretch, or several too short to see."""

    x0: float
    x1: float
    start: datetime
    end: datetime
    seconds: dict[str | None, float]  # by status

    @property
    def status(self) -> str | None:
        return max(self.seconds, key=lambda status: _SEVERITY.get(status, 0))

    @property
    def narrow(self) -> bool:
        return self.x1 - self.x0 < _MIN_CELL

    def title(self) -> str:
        when = f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"
        if len(self.seconds) == 1:
            status = self.status or "not shown (more changes than the timeline keeps)"
            return f"{status} {when} ({_span_text(sum(self.seconds.values()))})"
        return f"{when}: " + ", ".join(
            f"{status or 'not shown'} {_span_text(seconds)}" for status, seconds in
            sorted(self.seconds.items(), key=lambda item: -_SEVERITY.get(item[0], 0)))


def consensus_band(view: RangeChart, *, height: int = 20) -> Markup:
    """The consensus over the range as a band of UP / PARTIAL / DOWN (and
    PENDING) stretches on the chart's time axis; stretches too short to see
    are merged with their neighbours and shown in the worst status."""
    x = _time_axis(view)
    cells: list[_Cell] = []
    for span in view.timeline:
        cell = _Cell(x(span.start), x(span.end), span.start, span.end,
                     {span.status: (span.end - span.start).total_seconds()})
        if cell.narrow and cells and cells[-1].narrow:
            last = cells[-1]
            last.x1, last.end = cell.x1, cell.end
            last.seconds[span.status] = last.seconds.get(span.status, 0.0) + cell.seconds[span.status]
        else:
            cells.append(cell)
    shown = ", ".join(sorted({cell.status or "not shown" for cell in cells})) or "nothing decided in this range"
    parts = [f'<svg class="consensus-band" viewBox="0 0 {_WIDTH} {height}" role="img" '
             f'aria-label="{escape("consensus timeline: " + shown)}">']
    # Narrow cells last, so their minimum width is drawn over a wide neighbour.
    for cell in sorted(cells, key=lambda c: c.narrow):
        parts.append(f'<rect class="band {(cell.status or "unknown").lower()}" x="{cell.x0:.1f}" y="0" '
                     f'width="{max(cell.x1 - cell.x0, _MIN_CELL):.1f}" height="{height}">'
                     f'<title>{escape(cell.title())}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))
