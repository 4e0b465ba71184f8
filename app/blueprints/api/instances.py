"""The cluster's membership over JSON: who is in it, in which failover
order, and the transitions seen here. An administrator changes a member's
failover order on the primary; it reaches every member with the
configuration."""
from flask import jsonify

from app.blueprints.api import bp
from app.blueprints.api.views import _refuse_change
from app.blueprints.errors import json_body, json_error
from app.services import configuration, failover
from app.services.sync import primary


def _event_view(event) -> dict:
    return {"at": event.at.isoformat(), "epoch": event.epoch, "kind": event.kind, "instanceId": event.subject_id,
            "detail": event.detail}


@bp.get("/instances")
def list_instances():
    state = configuration.snapshot()
    return jsonify({
        "role": state.role, "epoch": state.epoch, "instanceId": state.instance_id,
        "primaryUrl": failover.own_url() if state.is_primary else state.primary_url,
        "instances": [primary.instance_view(i) for i in failover.members()],
        "events": [_event_view(e) for e in configuration.cluster_events()],
    })


@bp.route("/instances/<instance_id>", methods=["PATCH"])
def update_instance(instance_id):
    refused = _refuse_change()
    if refused:
        return refused
    data, error = json_body()
    if error:
        return error
    unknown = sorted(set(data) - {"failoverOrder"})
    if unknown:
        return json_error(400, "validation_error", f"only failoverOrder can be changed; not {', '.join(unknown)}",
                          fields={name: "cannot be changed" for name in unknown})
    order = data.get("failoverOrder")
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 10_000:
        return json_error(400, "validation_error", "failoverOrder must be an integer from 0 to 10000",
                          fields={"failoverOrder": "must be an integer from 0 to 10000"})
    try:
        member = failover.set_failover_order(instance_id, order)
    except LookupError as exc:
        return json_error(404, "not_found", str(exc))
    except failover.FailoverRefused as exc:
        return json_error(409, "read_only", str(exc))
    return jsonify(primary.instance_view(member))
