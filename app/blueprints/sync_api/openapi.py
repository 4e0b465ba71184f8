"""The sync API's OpenAPI description, served at /sync/api/openapi.json.

How each route authenticates decides its security: the probes, health and
status are open; registration and the peer routes of an election take the
cluster's join secret; the rest an instance token from registration;
promotion and demotion an administrator's credentials, as the JSON API's.
"""
from flask import current_app, jsonify

from app import __version__
from app.blueprints.sync_api import bp
from app.services.openapi import Description, Operation
from app.services.readiness import ReadinessAnswer
from app.services.sync.schemas import (
    EPOCH_HEADER,
    SECRET_HEADER,
    AnnouncementAnswer,
    ElectionAnswer,
    EndpointConfig,
    FailoverOrderAnswer,
    HandoverAnswer,
    HandoverRequest,
    HealthAnswer,
    HeartbeatPayload,
    HeartbeatReply,
    InstanceRegistration,
    InstancesAnswer,
    PrimaryAnnouncement,
    ProbeAnswer,
    PromotionAnswer,
    RegistrationReply,
    ServiceNamesAnswer,
    StatusAnswer,
    SyncConfiguration,
    VoteAnswer,
    VoteRequest,
)

DESCRIPTION = Description(
    "Endpoint monitor sync API", "sync_api",
    description=("What the instances of a cluster say to each other, on the sync port. A dependent registers "
                 f"with the join secret (`{SECRET_HEADER}`) and gets an instance token; with it, it sends "
                 "heartbeats with its results and fetches the configuration. Only the primary serves those "
                 f"(409 `not_primary` elsewhere); a sender's `{EPOCH_HEADER}` older than the cluster's is refused "
                 "(409 `stale_epoch`), and every answer carries the instance's epoch in that header."),
    security_schemes={
        "instanceToken": {"type": "http", "scheme": "bearer",
                          "description": "The token registration answered (renewed in heartbeat replies)"},
        "joinSecret": {"type": "apiKey", "in": "header", "name": SECRET_HEADER,
                       "description": "The cluster's SYNC_SHARED_SECRET"},
        "adminBasic": {"type": "http", "scheme": "basic", "description": "An administrator's email and password"},
        "adminKey": {"type": "http", "scheme": "bearer", "description": "An administrator's API key"},
    },
)
OPEN = ()
TOKEN = (("instanceToken",),)
SECRET = (("joinSecret",),)
ADMIN = (("adminBasic",), ("adminKey",))
EPOCH = {EPOCH_HEADER: {"type": "integer", "description": "The sender's cluster epoch"}}
# Every answer but the load balancer's probes carries this instance's epoch
# (absent only while the database is out of reach).
STAMPED = {EPOCH_HEADER: {"description": "This instance's cluster epoch",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
ETAG = {"ETag": {"required": True, "description": "The configuration version, quoted",
                 "schema": {"type": "string", "pattern": '^"[0-9]+"$'}}}
# Routes of the primary alone: refused elsewhere or for a stale epoch (409).
_PRIMARY = (400, 401, 409)
_PEER = (400, 401, 413, 415, 429, 503)


def _describe(view, method, *args, **kwargs):
    kwargs.setdefault("answer_headers", STAMPED)
    DESCRIPTION.describe(view, method, Operation(*args, **kwargs))


_describe("openapi", "GET", "This description", {200: {"type": "object"}}, security=OPEN, tag="meta")
_describe("health", "GET", "Liveness for peers: who this is and whom it follows", {200: HealthAnswer},
          security=OPEN, tag="probes")
_describe("healthz", "GET", "Alive (no database, no Redis), for a load balancer", {200: ProbeAnswer},
          security=OPEN, tag="probes", answer_headers={})
_describe("readyz", "GET", "Ready: database, Redis, clock lease, a worker", {200: ReadinessAnswer,
                                                                           503: ReadinessAnswer},
          security=OPEN, tag="probes", answer_headers={})
_describe("status", "GET", "Who this is, whom it follows, its failover order", {200: StatusAnswer},
          security=OPEN, tag="probes")

_describe("register", "POST", "Register an instance and issue its token", {201: RegistrationReply},
          (*_PEER, 409), body=InstanceRegistration, headers=EPOCH, security=SECRET, tag="membership",
          description=("Registering again revokes the instance's earlier tokens. A registered id that still sends "
                       "heartbeats is taken only with one of its tokens (`Authorization: Bearer`): 409 otherwise."))
_describe("heartbeat", "PUT", "Report state and results; get them acknowledged", {200: HeartbeatReply},
          (*_PRIMARY, 403, 413, 415), body=HeartbeatPayload, headers=EPOCH, security=TOKEN, tag="membership")
_describe("instances", "GET", "The members, in failover order", {200: InstancesAnswer}, _PRIMARY,
          headers=EPOCH, security=TOKEN, tag="membership")
_describe("delete_instance", "DELETE", "Leave the cluster (an instance deletes only itself)", {204: None},
          (*_PRIMARY, 403, 404), headers=EPOCH, security=TOKEN, tag="membership")
_describe("endpoints", "GET", "The configuration the asking instance checks", {200: SyncConfiguration, 304: None},
          _PRIMARY, headers={**EPOCH, "If-None-Match": {"type": "string", "description": "An ETag answered before"}},
          answer_headers={**STAMPED, **ETAG}, security=TOKEN, tag="configuration")
_describe("endpoint", "GET", "One endpoint's configuration", {200: EndpointConfig}, (*_PRIMARY, 404),
          headers=EPOCH, security=TOKEN, tag="configuration")
_describe("notification_services", "GET", "Notification services, without secrets", {200: ServiceNamesAnswer},
          _PRIMARY, headers=EPOCH, security=TOKEN, tag="configuration")
_describe("failover_order", "GET", "Who takes over, in order", {200: FailoverOrderAnswer}, _PRIMARY,
          headers=EPOCH, security=TOKEN, tag="configuration")

_describe("vote", "POST", "A candidate asks for this instance's vote", {200: VoteAnswer}, _PEER, body=VoteRequest,
          security=SECRET, tag="failover")
_describe("announce", "POST", "A new primary names itself", {200: AnnouncementAnswer}, _PEER,
          body=PrimaryAnnouncement, security=SECRET, tag="failover",
          description="Followed once the announced primary's own status confirms it.")
_describe("handover", "POST", "The primary's side of a manual promotion", {200: HandoverAnswer}, (*_PEER, 409),
          body=HandoverRequest, security=SECRET, tag="failover")
_describe("elect", "POST", "A candidate handed over to runs its election now", {200: ElectionAnswer},
          (*_PEER, 409), body=HandoverRequest, security=SECRET, tag="failover")
_describe("promote", "POST", "Make this instance the primary", {200: PromotionAnswer}, (401, 403, 409),
          security=ADMIN, tag="failover",
          description="The primary hands over, then this instance wins the next epoch's election.")
_describe("demote", "POST", "Hand the primary role to the next live candidate", {200: PromotionAnswer},
          (401, 403, 409), security=ADMIN, tag="failover",
          description="Only at the primary's own sync API, naming itself.")


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API."""
    return jsonify(DESCRIPTION.document(current_app, __version__))
