"""The deliveries on the notifications page: each names the endpoint its
alert was about (linked) or says it was a test, a test sent with HTMX
brings the table up to date in the same response, and every row has the
header's cells (no layout class on a cell that would take it out of the
table)."""
from __future__ import annotations

import re
import uuid

from app.extensions import db
from app.models import NotificationDelivery, NotificationService, utcnow
from app.notifiers.base import AlertMessage
from tests.ui.conftest import make_endpoint, post


def add_hook(web, app, httpserver) -> int:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    assert post(web, "/notifications/new", {"name": "Ops hook", "kind": "webhook", "url": httpserver.url_for("/hook"),
                                            "isEnabled": "on"}).status_code == 303
    with app.app_context():
        return db.session.execute(db.select(NotificationService.id)).scalar_one()


def add_alert(app, service_id: int, endpoint_id: int, name: str, *, status: str = "sent",
              error: str | None = None) -> None:
    """A down alert for an endpoint, as the alert pipeline records it."""
    with app.app_context():
        now = utcnow()
        message = AlertMessage(event="down", endpoint_id=endpoint_id, endpoint_name=name, target="http://127.0.0.1:9/",
                               check_type="http", status="DOWN", previous_status="UP", occurred_at=now,
                               reason="connection refused")
        db.session.add(NotificationDelivery(notification_service_id=service_id, endpoint_id=endpoint_id,
                                            event="down", status=status, dedupe_key=f"t:{uuid.uuid4()}",
                                            payload=message.to_payload(), attempts=3 if error else 1,
                                            last_error=error, created_at=now))
        db.session.commit()


def section(html: str, element_id: str) -> str:
    match = re.search(rf'<section id="{element_id}"[^>]*>.*?</section>', html, re.S)
    assert match, f"no section #{element_id}"
    return match.group(0)


def rows(table_html: str) -> list[list[str]]:
    """Each body row's cells as text (tags stripped)."""
    body = re.search(r"<tbody>(.*?)</tbody>", table_html, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def headers(table_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<th[^>]*>(.*?)</th>", table_html, re.S)]


def test_a_delivery_names_its_endpoint_with_a_link(web, app, httpserver):
    service_id = add_hook(web, app, httpserver)
    endpoint_id = make_endpoint(app, name="Checkout API")
    add_alert(app, service_id, endpoint_id, "Checkout API")
    html = web.get("/notifications").get_data(as_text=True)
    recent = section(html, "recent-deliveries")
    assert "Endpoint" in headers(recent)
    assert f'<a href="/endpoints/{endpoint_id}">Checkout API</a>' in recent
    [row] = rows(recent)
    assert row[headers(recent).index("Endpoint")] == "Checkout API"


def test_send_test_updates_the_deliveries_in_the_same_response(web, app, httpserver):
    service_id = add_hook(web, app, httpserver)
    before = section(web.get("/notifications").get_data(as_text=True), "recent-deliveries")
    assert "Nothing sent yet." in before
    response = web.post(f"/notifications/{service_id}/test",
                        headers={"HX-Request": "true", "X-CSRFToken": web.token})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Test message sent." in html
    recent = section(html, "recent-deliveries")
    assert 'hx-swap-oob="true"' in recent.split(">", 1)[0]
    [row] = rows(recent)
    columns = headers(recent)
    assert row[columns.index("Service")] == "Ops hook"
    assert row[columns.index("Endpoint")] == "test"
    assert row[columns.index("Event")] == "test" and row[columns.index("Status")] == "sent"
    assert len(httpserver.log) == 1


def test_every_row_has_the_headers_cells_and_no_cell_is_laid_out_as_a_block(web, app, httpserver):
    service_id = add_hook(web, app, httpserver)
    endpoint_id = make_endpoint(app, name="Checkout API")
    add_alert(app, service_id, endpoint_id, "Checkout API")
    add_alert(app, service_id, endpoint_id, "Checkout API", status="failed", error="HTTP 500 from the hook")
    html = web.get("/notifications").get_data(as_text=True)
    tables = re.findall(r"<table.*?</table>", html, re.S)
    assert len(tables) == 3  # services, failed deliveries, recent deliveries
    for table in tables:
        width = len(headers(table))
        assert all(len(row) == width for row in rows(table)), table
    # .reason and .actions set display (block, flex): on a <td> they take
    # the cell out of the table's layout and its borders out of line.
    assert not re.search(r'<td[^>]*class="[^"]*\b(reason|actions)\b', html)
    failed = section(html, "failed-deliveries")
    assert "HTTP 500 from the hook" in failed and f'href="/endpoints/{endpoint_id}"' in failed
