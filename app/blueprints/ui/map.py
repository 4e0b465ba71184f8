"""The location map: a marker per instance on a world map drawn here, and
its figures by region (``/map``).

The land is drawn once per page; the live refresh (HTMX) replaces the
markers and the table of regions alone.
"""
from __future__ import annotations

from flask import make_response, render_template, request

from app.blueprints.ui import bp
from app.services import location_map, world_map

REFRESH_SECONDS = 15


@bp.app_template_filter("milliseconds")
def milliseconds(value: float | None) -> str:
    """A response time as the map shows it: "123 ms", "0.4 ms", or a dash for none."""
    if value is None:
        return "–"
    return f"{value:.1f} ms" if value < 9.95 else f"{value:.0f} ms"


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    """A share in per cent: a decimal below 10 % (where 0.5 % matters), a dash for none."""
    if value is None:
        return "–"
    return f"{value:.1f} %" if 0 < value < 10 else f"{value:.0f} %"


@bp.get("/map", endpoint="location_map")
def location_map_page():
    """The page; an HTMX request (the live refresh) gets the markers and,
    out of band, the regions."""
    view = location_map.location_map()
    context = {"view": view, "refresh": REFRESH_SECONDS, "view_box": world_map.VIEW_BOX}
    if request.headers.get("HX-Request"):
        response = make_response(render_template("partials/map_markers.html", regions_oob=True, **context))
    else:
        response = make_response(render_template(
            "ui/map.html", world=world_map.world(), outline=world_map.OUTLINE, graticule=world_map.GRATICULE,
            fetch_command=world_map.FETCH_COMMAND, **context))
    # One URL, two answers: a cache must never hand the fragment back as the page.
    response.headers["Vary"] = "HX-Request"
    return response
