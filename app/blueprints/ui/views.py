"""Pages: dashboard, endpoint detail, public status pages, health.

A request with ``HX-Request`` gets the fragment it asks for, others the
whole page (one route per page).
"""
from __future__ import annotations

from datetime import datetime

from flask import abort, current_app, jsonify, make_response, render_template, request, url_for

from app import __version__
from app.blueprints.ui import bp
from app.blueprints.ui.charts import consensus_band, location_chart, location_legend, swatch
from app.blueprints.ui.heartbeats import heartbeat_bar
from app.checks import CHECK_TYPES
from app.models import utcnow
from app.models.endpoint import consensus_rule_text
from app.services import configuration, dashboard, history, status_pages
from app.services import endpoints as endpoint_service

REFRESH_SECONDS = 5


@bp.app_template_global()
def beats(heartbeats):
    return heartbeat_bar(heartbeats)


@bp.app_template_filter("duration")
def duration(delta) -> str:
    """A time span in the two largest units: "3 d 4 h", "5 min 2 s"."""
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _parse_since(raw: str | None) -> datetime | None:
    try:
        since = datetime.fromisoformat(raw or "")
    except ValueError:
        return None
    return since if since.tzinfo is not None else None


def _refused_filter(exc: dashboard.InvalidFilter, columns: list, is_htmx: bool):
    """A 400 that names each bad filter; the page keeps its form so it can be put right."""
    message = "This filter cannot be applied: " + "; ".join(f"{name} {why}" for name, why in exc.errors.items())
    if is_htmx:
        return render_template("partials/message.html", kind="error", message=message), 400
    return render_template("ui/dashboard.html", listed=None, columns=columns, filters=dashboard.Filters(),
                           error=message, counts=dashboard.status_counts(), refresh=REFRESH_SECONDS,
                           settings=current_app.config["SETTINGS"], role=configuration.role()), 400


@bp.get("/", endpoint="dashboard")
def dashboard_page():
    """Endpoints x locations, a page at a time: each location's cell, the
    consensus with its uptime, a heartbeat bar, the certificate.

    HTMX requests: with ``since`` (the poll), only the page's rows that
    changed since then go back, as out-of-band swaps, or 204 when nothing
    did; the whole table if what the page lists changed (rows added,
    deleted, re-sorted or filtered out; columns; probe-offline locations).
    Without ``since`` (the filter form, the page links), the table.
    """
    now = utcnow()
    columns = dashboard.columns()
    is_htmx = bool(request.headers.get("HX-Request"))
    try:
        filters = dashboard.Filters.parse(request.args, columns)
    except dashboard.InvalidFilter as exc:
        return _refused_filter(exc, columns, is_htmx)
    listed = dashboard.page(filters, columns, now)
    context = {"listed": listed, "filters": listed.filters, "columns": columns, "now": now,
               "digest": listed.digest, "refresh": REFRESH_SECONDS,
               # one url_for, not one per row
               "endpoint_path": url_for("ui.endpoint_detail", endpoint_id=0)[:-1],
               "settings": current_app.config["SETTINGS"], "role": configuration.role()}
    since = _parse_since(request.args.get("since")) if is_htmx else None
    if since is not None:
        if request.args.get("view") == listed.digest:
            changed = dashboard.changed_since(listed, since, now)
            if not changed:
                return "", 204
            return render_template("partials/dashboard_changes.html", rows=changed, full_table=False,
                                   counts=dashboard.status_counts(), **context)
        dashboard.add_matrix(listed, now)
        return render_template("partials/dashboard_changes.html", full_table=True,
                               counts=dashboard.status_counts(), **context)
    dashboard.add_matrix(listed, now)
    template = "partials/dashboard_table.html" if is_htmx else "ui/dashboard.html"
    response = make_response(render_template(template, counts=dashboard.status_counts(),
                                             summary_oob=is_htmx, **context))
    if is_htmx:
        response.headers["Vary"] = "HX-Request"
    return response


@bp.get("/endpoints/<int:endpoint_id>")
def endpoint_detail(endpoint_id: int):
    """Response time per location and the consensus timeline over a range,
    uptime per location and of the consensus, incidents, failures, certificate.

    Without ``range`` the range fits the endpoint's age. HTMX requests get
    the chart panel for another range (``part=chart``), or the live status
    header (``part=status``), which answers 204 while nothing changed and
    286 (stop polling) once the endpoint is gone.
    """
    endpoint = endpoint_service.get_endpoint(endpoint_id)
    is_htmx = bool(request.headers.get("HX-Request"))
    if endpoint is None:
        if is_htmx and request.args.get("part") == "status":
            return render_template("partials/message.html", kind="error",
                                   message="This endpoint was deleted."), 286
        abort(404, description=f"There is no endpoint with id {endpoint_id}.")
    now = utcnow()
    range_key = history.range_for(request.args.get("range"), endpoint, now)
    version = f"{endpoint.updated_at.timestamp():.6f}"
    if is_htmx and request.args.get("part") == "status":
        if request.args.get("version") == version:
            return "", 204
        return render_template("partials/endpoint_status.html", endpoint=endpoint, version=version,
                               range_key=range_key, refresh=REFRESH_SECONDS)
    view = history.range_chart(endpoint, range_key, now)
    chart_context = {"endpoint": endpoint, "range_key": range_key, "ranges": history.RANGES, "view": view,
                     "chart": location_chart(view), "legend": location_legend(view), "band": consensus_band(view)}
    if is_htmx and request.args.get("part") == "chart":
        return render_template("partials/endpoint_chart.html", **chart_context)
    return render_template(
        "ui/endpoint_detail.html", version=version, refresh=REFRESH_SECONDS, now=now,
        location_uptimes=history.location_uptimes(endpoint, now), consensus_uptimes=history.consensus_uptimes(
            endpoint, now), swatch=swatch, incidents=history.incidents(endpoint, now=now),
        failures=history.recent_failures(endpoint.id), certificate=history.latest_certificate(endpoint),
        locations=history.locations(endpoint) if configuration.is_primary() else [], consensus_rule=consensus_rule_text(
            endpoint.consensus_rule, endpoint.consensus_min_down),
        kind=CHECK_TYPES.get(endpoint.check_type), **chart_context)


@bp.get("/status/<slug>")
def status_page(slug: str):
    """A published group's public status page: no sign-in, read-only."""
    group = status_pages.published_group_for(slug)
    if group is None:
        abort(404, description="There is no published status page here.")
    page = status_pages.status_page(group)
    template = "partials/status_content.html" if request.headers.get("HX-Request") else "ui/status_page.html"
    response = make_response(render_template(template, page=page, slug=slug))
    # Public and the same for everyone: let proxies and browsers keep it as
    # long as the page waits between refreshes; the fragment and the whole
    # page are kept apart.
    response.headers["Cache-Control"] = f"public, max-age={page.refresh_seconds}"
    response.vary.add("HX-Request")
    return response


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever a page links: the same SVG icon."""
    return current_app.send_static_file("favicon.svg")


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "version": __version__})
