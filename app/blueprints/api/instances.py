"""The cluster's membership over JSON: who is in it, in which failover
order, and the transitions seen here. An administrator changes a member's
failover order on the primary; it reaches every member with the
configuration."""
from flask import jsonify
from pydantic import ValidationError

from app.blueprints.api import bp
from app.blueprints.api.views import _refuse_change
from app.blueprints.errors import json_body, json_error
from app.services import configuration, failover
from app.services.sync import primary
from app.services.validation_messages import messages_of


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
    try:
        change = failover.FailoverOrderChange.model_validate(data, strict=True)
    except ValidationError as exc:
        fields = messages_of(exc, failover.FailoverOrderChange,
                             unknown_field="cannot be changed: only failoverOrder can")
        return json_error(400, "validation_error", "; ".join(f"{k}: {v}" for k, v in fields.items()), fields=fields)
    try:
        member = failover.set_failover_order(instance_id, change.failover_order)
    except LookupError as exc:
        return json_error(404, "not_found", str(exc))
    except failover.FailoverRefused as exc:
        return json_error(409, "read_only", str(exc))
    return jsonify(primary.instance_view(member))
