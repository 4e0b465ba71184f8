"""The dependent's side of sync: register, pull configuration, send heartbeats.

A dependent keeps its own copy of the configuration and its own results, so
it goes on checking while the primary is away. Its results wait in an outbox
(its own ``response_times`` rows with no ``synced_at``) until the primary
acknowledges them by id; they are sent oldest first, in bounded batches.
The token, the connection counters and the outbox all live in the database,
so a restarted dependent keeps its identity, token and unsent results.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import requests
from redis.exceptions import LockError
from flask import current_app
from sqlalchemy import func, select, update

from app import __version__
from app.extensions import db
from app.models import STATUS_PENDING, Endpoint, ResponseTime, utcnow
from app.services import configuration, failover
from app.services.endpoints import InvalidEndpoint, apply_input, parse_input
from app.services.sync import replication
from app.services.sync.host_metrics import system_info
from app.services.sync.primary import public_sync_url
from app.services.sync.schemas import EPOCH_HEADER, MAX_RESULTS_PER_HEARTBEAT, SECRET_HEADER

logger = logging.getLogger(__name__)

TOKEN = configuration.SYNC_TOKEN
FAILURES = "primary_failures"
LAST_SUCCESS = "primary_last_success_at"
LAST_CONFIG_PULL = "config_pulled_at"
REGISTERED_WITH = "registered_with"
# Failed rounds since first start (never reset) and the newest failure,
# reported with each heartbeat for the primary's instances page.
SYNC_ERRORS = "sync_errors_total"
LAST_SYNC_ERROR = "last_sync_error"
LAST_SYNC_ERROR_AT = "last_sync_error_at"
# The longest error message a heartbeat carries (the primary refuses longer).
SYNC_ERROR_LENGTH = 500
# Set when the primary refuses our token; the next round registers first.
TOKEN_REFUSED_AT = "sync_token_refused_at"
# The newest epoch whose primary was caught up from here, and the time
# before which queued-again results wait behind fresh ones.
CAUGHT_UP_EPOCH = "caught_up_epoch"
BACKFILL_BEFORE = "backfill_before"

HEARTBEAT_BATCH = 500
# Results waiting for the primary beyond which each sync round warns: they
# are never dropped, so the database grows while the primary is away.
OUTBOX_WARN_AT = 100_000
# Batches sent in one sync run: drains a backlog after an outage without
# holding a worker for long.
MAX_BATCHES_PER_RUN = 20


class PrimaryUnavailable(Exception):
    """The primary could not be reached or answered with a server error."""


class NotAuthorized(Exception):
    """The primary refused our token (expired, revoked, or unknown)."""


class MalformedReply(PrimaryUnavailable):
    """The primary's answer was not what the sync API promises."""


class NewerPrimary(Exception):
    """The answer shows a newer epoch: not an outage, someone to follow."""

    def __init__(self, epoch: int, url: str):
        super().__init__(f"epoch {epoch} is held by the primary at {url}")
        self.epoch, self.url = epoch, url


class Refused(PrimaryUnavailable):
    """The primary refused a request as invalid (a 4xx other than 401)."""

    def __init__(self, message: str, status: int, body: dict):
        super().__init__(message)
        self.status, self.body = status, body


@dataclass
class PrimaryClient:
    """HTTP calls to the primary's sync API."""

    base_url: str
    timeout: float
    epoch: int = 0
    session: requests.Session | None = None
    # Called before every request (the sync job renews its lock there).
    before_request: Callable[[], object] | None = None

    def __post_init__(self):
        self.session = self.session or requests.Session()

    def call(self, method: str, path: str, *, token: str | None = None, secret: str | None = None,
             json=None, headers=None) -> requests.Response:
        if self.before_request is not None:
            self.before_request()
        sent = {EPOCH_HEADER: str(self.epoch), **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if secret:
            sent[SECRET_HEADER] = secret
        try:
            response = self.session.request(method, f"{self.base_url}/sync/api{path}", json=json,
                                            headers=sent, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PrimaryUnavailable(f"{self.base_url} unreachable: {type(exc).__name__}") from None
        self._newer_epoch(response)
        if response.status_code == 401:
            raise NotAuthorized(response.text[:200])
        if response.status_code >= 500:
            raise PrimaryUnavailable(f"{self.base_url} answered {response.status_code}")
        if response.status_code >= 400:
            # A refusal that retrying will not fix: report what the primary said.
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise Refused(f"{self.base_url} refused {method} {path}: {response.status_code} "
                          f"{response.text[:300]}", response.status_code, body if isinstance(body, dict) else {})
        return response


    def _newer_epoch(self, response: requests.Response) -> None:
        """Raise ``NewerPrimary`` when the reply names a newer epoch: a 409
        ``not_primary`` or ``stale_epoch`` naming whom to follow, or the
        primary's own epoch stamp moved on."""
        if response.status_code == 409:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("error") in ("not_primary", "stale_epoch"):
                epoch, url = body.get("epoch"), body.get("primaryUrl")
                if isinstance(epoch, int) and epoch > self.epoch and isinstance(url, str) and url:
                    raise NewerPrimary(epoch, url)
            return
        try:
            stamped = int(response.headers.get(EPOCH_HEADER, ""))
        except ValueError:
            return
        if response.status_code < 400 and stamped > self.epoch:
            raise NewerPrimary(stamped, self.base_url)


def clear_text_warning(primary_url: str | None) -> str | None:
    """A warning when the primary is reached over plain HTTP beyond this host.

    The join secret, the token and Kafka passwords in endpoint options travel
    in sync requests; across a network they need TLS.
    """
    if not primary_url:
        return None
    parts = urlsplit(primary_url)
    if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return None
    return (f"PRIMARY_SYNC_URL {primary_url} is plain HTTP: the join secret, this instance's token "
            "and endpoint secrets cross the network in clear text; put the primary's sync API behind "
            "TLS and use an https:// URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client() -> PrimaryClient:
    settings = current_app.config["SETTINGS"]
    return PrimaryClient(configuration.primary_url() or settings.primary_sync_url,
                         float(settings.connection_timeout), epoch=configuration.epoch())


def registration() -> dict:
    settings = current_app.config["SETTINGS"]
    return {
        "instanceId": configuration.instance_id(),
        "instanceName": settings.instance_name,
        "location": settings.instance_location,
        "syncUrl": public_sync_url(settings),
        "failoverOrder": failover.own_failover_order(),
        "heartbeatInterval": settings.heartbeat_interval,
        "version": __version__,
        "epoch": configuration.epoch(),
    }


def register(primary: PrimaryClient) -> str:
    """Register with the primary using the join secret; store the token."""
    secret = current_app.config["SETTINGS"].sync_shared_secret
    # The token held, even a refused or expired one, proves this is the
    # instance that registered the id before.
    reply = primary.call("POST", "/register", secret=secret, token=configuration.get_state(TOKEN),
                         json=registration()).json()
    configuration.set_state(TOKEN, reply["token"])
    configuration.set_state(TOKEN_REFUSED_AT, None)
    configuration.set_state(REGISTERED_WITH, primary.base_url)
    if isinstance(reply.get("primaryId"), str):
        configuration.set_primary_id(reply["primaryId"])
    if isinstance(reply.get("holds"), dict):
        catch_up(reply["holds"], int(reply.get("epoch", 0)))
    db.session.commit()
    logger.info("registered with the primary at %s as instance %s", primary.base_url, reply["instanceId"])
    return reply["token"]


def pull_configuration(primary: PrimaryClient, token: str, *, force: bool = False) -> bool:
    """Fetch the configuration unless unchanged (304); returns True if applied."""
    local_version = configuration.config_version()
    headers = {} if force else {"If-None-Match": f'"{local_version}"'}
    response = primary.call("GET", "/endpoints", token=token, headers=headers)
    configuration.set_state(LAST_CONFIG_PULL, utcnow().isoformat())
    if response.status_code == 304:
        db.session.commit()
        return False
    apply_configuration(response.json())
    return True


def apply_configuration(config: dict) -> dict:
    """Make the local endpoints match the primary's, in one transaction.

    Endpoints keep the primary's ids; their runtime state (status,
    counters, schedule) is kept across updates. An endpoint that fails local
    validation is skipped with a warning rather than stored half-valid.
    """
    version = int(config["configVersion"])
    remote = {int(e["id"]): e for e in config["endpoints"]}
    local = {e.id: e for e in db.session.execute(select(Endpoint)).scalars()}
    added = changed = removed = skipped = 0
    for endpoint_id, data in remote.items():
        fields = {k: v for k, v in data.items() if k != "id"}
        try:
            spec = parse_input(fields)
        except InvalidEndpoint as exc:
            logger.warning("endpoint %s from the primary is invalid here, skipped: %s", endpoint_id, exc)
            skipped += 1
            continue
        endpoint = local.get(endpoint_id)
        if endpoint is None:
            endpoint = Endpoint(id=endpoint_id, status=STATUS_PENDING, next_check_at=0.0)
            db.session.add(endpoint)
            added += 1
        else:
            changed += 1
        was_paused = endpoint.is_paused
        apply_input(endpoint, spec)
        if was_paused and not spec.is_paused:
            endpoint.next_check_at = 0.0
    for endpoint_id, endpoint in local.items():
        if endpoint_id not in remote:
            db.session.delete(endpoint)
            removed += 1
    db.session.flush()
    if config.get("replica") is not None:  # a candidate: raises when malformed, and nothing is kept
        replication.apply_snapshot(config["replica"])
    elif config.get("members") is not None:  # any other member: the membership alone
        replication.apply_membership(config["members"])
    if config.get("maintenanceWindows") is not None:  # absent from a primary without them: keep ours
        replication.apply_maintenance_windows(config["maintenanceWindows"])
    configuration.set_config_version(version)  # after the flush's own bump
    db.session.commit()
    logger.info("configuration %d applied: %d added, %d updated, %d removed, %d skipped",
                version, added, changed, removed, skipped)
    return {"added": added, "updated": changed, "removed": removed, "skipped": skipped}


def catch_up(holds: dict, epoch: int) -> int:
    """Put back in the outbox every result held here that a new primary lacks.

    ``holds``: the newest ``checkedAt`` the primary holds from each instance.
    Results past it (all of an instance it holds nothing from), this
    instance's own and, on a stepped-down primary, other locations', are
    sent again, even those an earlier primary acknowledged; the primary
    stores each once. Done once per epoch; they go behind fresh results.
    """
    if epoch <= int(configuration.get_state(CAUGHT_UP_EPOCH, "-1")):
        return 0
    now = utcnow()
    queued = 0
    for instance_id in db.session.execute(select(ResponseTime.instance_id).distinct()).scalars():
        newest = holds.get(instance_id)
        try:
            since = datetime.fromisoformat(newest) if isinstance(newest, str) else None
        except ValueError:
            since = None
        query = update(ResponseTime).where(ResponseTime.instance_id == instance_id,
                                           ResponseTime.synced_at.is_not(None))
        if since is not None:
            query = query.where(ResponseTime.checked_at > since)
        queued += db.session.execute(query.values(synced_at=None)).rowcount
    configuration.set_state(CAUGHT_UP_EPOCH, str(epoch))
    configuration.set_state(BACKFILL_BEFORE, now.isoformat())
    if queued:
        logger.warning("catching the primary up (epoch %d): %d results it lacks are queued again", epoch, queued)
    return queued


def outbox_batch(limit: int = HEARTBEAT_BATCH) -> list[ResponseTime]:
    """The next results to send: fresh ones oldest first, then, with room
    left, ones queued again to catch a new primary up."""
    limit = min(limit, MAX_RESULTS_PER_HEARTBEAT)
    unsent = select(ResponseTime).where(ResponseTime.synced_at.is_(None)).order_by(ResponseTime.id)
    backfill = configuration.get_state(BACKFILL_BEFORE)
    if backfill is None:
        return list(db.session.execute(unsent.limit(limit)).scalars())
    before = datetime.fromisoformat(backfill)
    batch = list(db.session.execute(unsent.where(ResponseTime.checked_at >= before).limit(limit)).scalars())
    if len(batch) < limit:
        older = list(db.session.execute(unsent.where(ResponseTime.checked_at < before)
                                        .limit(limit - len(batch))).scalars())
        if not older and not batch:
            configuration.set_state(BACKFILL_BEFORE, None)
        batch += older
    return batch


def outbox_size() -> int:
    return db.session.execute(
        select(func.count(ResponseTime.id)).where(ResponseTime.synced_at.is_(None))
    ).scalar_one()


def heartbeat_payload(results: list[ResponseTime]) -> dict:
    from app.services import consensus

    last_success = configuration.get_state(LAST_SUCCESS)
    connectivity = consensus.own_connectivity() or {}
    own = configuration.instance_id()
    return {
        "instanceId": configuration.instance_id(),
        "epoch": configuration.epoch(),
        "status": "healthy",
        "configVersion": configuration.config_version(),
        "systemInfo": system_info(),
        "connectionStatus": {
            "primaryReachable": True,
            "consecutiveFailures": int(configuration.get_state(FAILURES, "0")),
            "lastSuccessAt": last_success,
            "outboxSize": outbox_size(),
            **({"connectivityOk": connectivity["ok"], "connectivityError": connectivity["error"],
                "connectivityCheckedAt": connectivity["checkedAt"]} if connectivity else {}),
            **sync_errors(),
        },
        "results": [
            {
                **({"instanceId": r.instance_id} if r.instance_id != own else {}),
                "resultId": r.result_id,
                "endpointId": r.endpoint_id,
                "isOk": r.is_ok,
                "responseTime": r.response_time_ms,
                "status": r.status,
                "failureReason": r.failure_reason,
                "checkType": r.check_type,
                "metadata": r.check_metadata or {},
                "checkedAt": r.checked_at.isoformat(),
            }
            for r in results
        ],
    }


def mark_synced(result_ids: list[str]) -> int:
    if not result_ids:
        return 0
    return db.session.execute(
        update(ResponseTime).where(ResponseTime.result_id.in_(result_ids), ResponseTime.synced_at.is_(None))
        .values(synced_at=utcnow())
    ).rowcount


def drop_refused_results(batch: list[ResponseTime], fields: dict) -> int:
    """Take results the primary refused as invalid out of the outbox.

    The primary refuses a whole heartbeat for one invalid result; sent again
    as it is, that result would block the outbox for good. It is kept here
    (marked sent) and logged with the primary's reason.
    """
    refused = set()
    for field, reason in fields.items():
        parts = str(field).split(".")
        if len(parts) >= 2 and parts[0] == "results" and parts[1].isdigit() and int(parts[1]) < len(batch):
            result = batch[int(parts[1])]
            refused.add(result.result_id)
            logger.error("the primary refused result %s of endpoint %s (%s: %s); it stays here only",
                         result.result_id, result.endpoint_id, field, reason)
    return mark_synced(sorted(refused))


def send_heartbeat(primary: PrimaryClient, token: str) -> dict:
    """Send one heartbeat with the oldest unacknowledged results."""
    batch = outbox_batch()
    try:
        reply = primary.call("PUT", "/heartbeat", token=token, json=heartbeat_payload(batch)).json()
    except Refused as exc:
        if exc.status == 400 and drop_refused_results(batch, exc.body.get("fields") or {}):
            db.session.commit()  # the rest goes in the next heartbeat
        raise
    acknowledged = list(reply.get("acknowledged", [])) + [r["resultId"] for r in reply.get("rejected", [])]
    # Only what this heartbeat carried can be acknowledged by its reply.
    sent = {r.result_id for r in batch}
    marked = mark_synced([result_id for result_id in acknowledged if result_id in sent])
    if reply.get("token"):
        configuration.set_state(TOKEN, reply["token"])
    if reply.get("incidents") is not None:  # a candidate
        replication.apply_incidents(reply["incidents"])
    db.session.commit()
    return {"sent": len(batch), "acknowledged": marked, "configVersion": reply.get("configVersion"),
            "more": len(batch) == HEARTBEAT_BATCH}


def sync_once(*, before_request: Callable[[], object] | None = None) -> dict:
    """One round with the primary: register if needed, heartbeats, config.

    1. Without a usable token (none yet, or the primary refused it), register
       (join secret) and pull the configuration.
    2. Send heartbeats until the outbox is empty or the batch budget is spent.
       A heartbeat refused with 401 marks the token refused and registers
       again at once; the refused token stays stored until a new one
       replaces it, so a failed registration leaves the state as it was.
    3. Pull the configuration when the primary's version differs from ours,
       or when SYNC_INTERVAL has passed since the last pull.
    Failures are counted for the connection status and re-raised.
    """
    settings = current_app.config["SETTINGS"]
    primary = client()
    primary.before_request = before_request
    summary = {"sent": 0, "acknowledged": 0, "configApplied": False}
    warn_if_outbox_over_bound()
    try:
        token = configuration.get_state(TOKEN)
        if not token or configuration.get_state(TOKEN_REFUSED_AT):
            token = register(primary)
            summary["configApplied"] = pull_configuration(primary, token, force=True)
        try:
            round_ = send_heartbeat(primary, token)
        except NotAuthorized:
            logger.warning("the primary at %s refused our token; registering again", primary.base_url)
            configuration.set_state(TOKEN_REFUSED_AT, utcnow().isoformat())
            db.session.commit()
            token = register(primary)
            round_ = send_heartbeat(primary, token)
        summary["sent"] += round_["sent"]
        summary["acknowledged"] += round_["acknowledged"]
        batches = 1
        while round_["more"] and batches < MAX_BATCHES_PER_RUN:
            round_ = send_heartbeat(primary, token)
            summary["sent"] += round_["sent"]
            summary["acknowledged"] += round_["acknowledged"]
            batches += 1
        pulled_at = configuration.get_state(LAST_CONFIG_PULL)
        stale = pulled_at is None or (utcnow() - datetime.fromisoformat(pulled_at)).total_seconds() >= settings.sync_interval
        if round_["configVersion"] != configuration.config_version() or stale:
            summary["configApplied"] = pull_configuration(primary, token) or summary["configApplied"]
    except NewerPrimary as exc:
        # Not an outage: the cluster moved on; follow whoever holds the epoch.
        db.session.rollback()
        followed = failover.follow_if_primary(exc.url, reason=f"the primary at {primary.base_url} answered: {exc}")
        return {**summary, "followed": exc.url if followed else None}
    except LockError:
        # The sync job's lock ran out (redis-py's LockError is a ValueError,
        # so before the next clause): the job abandons the round; it is no
        # failure of the primary's.
        db.session.rollback()
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A reply that is not the sync API's (a proxy's error page, hostile
        # traffic) changes nothing here and counts as a failed round.
        db.session.rollback()
        failure = MalformedReply(f"malformed reply from the primary: {type(exc).__name__}: {exc}")
        _count_failure(failure)
        raise failure from None
    except (PrimaryUnavailable, NotAuthorized) as exc:
        db.session.rollback()
        if isinstance(exc, NotAuthorized):
            # Refused anywhere in the round (a later batch, the configuration
            # pull, registration itself): the next round registers first.
            configuration.set_state(TOKEN_REFUSED_AT, utcnow().isoformat())
        _count_failure(exc)
        raise
    configuration.set_state(FAILURES, "0")
    configuration.set_state(LAST_SUCCESS, utcnow().isoformat())
    db.session.commit()
    return summary


def link_status() -> dict:
    """This dependent's link to its primary, for the instances page."""
    last_success = configuration.get_state(LAST_SUCCESS)
    refused_at = configuration.get_state(TOKEN_REFUSED_AT)
    outbox = outbox_size()
    return {
        "primary_url": configuration.primary_url(),
        "registered": bool(configuration.get_state(TOKEN)) and not refused_at,
        "token_refused_at": datetime.fromisoformat(refused_at) if refused_at else None,
        "failures": int(configuration.get_state(FAILURES, "0")),
        "last_success_at": datetime.fromisoformat(last_success) if last_success else None,
        "outbox": outbox,
        "outbox_over_bound": outbox > OUTBOX_WARN_AT,
        "outbox_warn_at": OUTBOX_WARN_AT,
        "config_version": configuration.config_version(),
    }


def warn_if_outbox_over_bound() -> bool:
    """Warn (once a sync round) when more than OUTBOX_WARN_AT results wait to be sent."""
    size = outbox_size()
    if size <= OUTBOX_WARN_AT:
        return False
    logger.warning("%d results wait for the primary at %s, more than %d: none is dropped, so the database "
                   "grows until the primary acknowledges them", size, configuration.primary_url(), OUTBOX_WARN_AT)
    return True


def sync_errors() -> dict:
    """The failed rounds this member reports with its heartbeats (camelCase)."""
    last_at = configuration.get_state(LAST_SYNC_ERROR_AT)
    return {"syncErrors": int(configuration.get_state(SYNC_ERRORS, "0")),
            **({"lastSyncError": configuration.get_state(LAST_SYNC_ERROR, ""), "lastSyncErrorAt": last_at}
               if last_at else {})}


def _count_failure(exc: Exception) -> None:
    """Record one more failed round for the connection status."""
    failures = int(configuration.get_state(FAILURES, "0")) + 1
    configuration.set_state(FAILURES, str(failures))
    configuration.set_state(SYNC_ERRORS, str(int(configuration.get_state(SYNC_ERRORS, "0")) + 1))
    configuration.set_state(LAST_SYNC_ERROR, str(exc)[:SYNC_ERROR_LENGTH] or type(exc).__name__)
    configuration.set_state(LAST_SYNC_ERROR_AT, utcnow().isoformat())
    db.session.commit()
    logger.warning("sync with the primary failed (%d in a row): %s", failures, exc)
