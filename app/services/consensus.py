"""Per-location status and the consensus of the locations (DESIGN section 7).

The one owner of ``location_status``, ``probe_states``, the consensus
columns of ``endpoints`` and ``aggregated_results``. Every result stored
passes through ``ingest``; readers (dashboard, endpoint page, API, status
pages) read what it keeps.

1. Per-location status: each location's results are applied in
   ``checked_at`` order with the endpoint's failure and success thresholds.
   A result no newer than the newest one applied for that location moves
   nothing (so a replayed heartbeat changes nothing); a result a dependent
   checked before its ``votes_from`` (delivered after a silence) is history:
   stored, never applied.
2. Fresh: a location's latest result is within two intervals plus the
   heartbeat interval, the timeout and a grace. Stale and probe-offline
   locations are shown but do not vote; nor does a location still PENDING.
3. The vote (``decide``): UP when every voter is UP; DOWN when the rule
   holds (``majority``: more than half the voters DOWN; ``atLeast:N``: at
   least N DOWN, N capped at the number of locations that check the
   endpoint); PARTIAL when some are DOWN but the rule does not hold. With no
   voter the consensus stays what it was (PENDING until a first decision).
   A standalone is a cluster of one location: the same path.
4. Each change of consensus is a ``status_changes`` row carrying the alert it
   raises (``alert_for``), decided under the endpoint's row lock, so two
   workers or a replayed heartbeat cannot raise one transition twice.
5. Probe-offline (``probe_verdict``): a location whose connectivity target
   fails, or that sees nearly all of its endpoints DOWN while the other
   locations see most of them UP, is left out of every vote until it sees
   most of them UP again.
6. ``reevaluate`` runs every few seconds: locations go stale and probes
   recover with no result arriving. It also writes the regular
   ``aggregated_results`` rows.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask import current_app
from pydantic import Field
from sqlalchemy import bindparam, func, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.services.openapi import Answer
from app.models import (
    STATUS_DOWN,
    STATUS_PARTIAL,
    STATUS_PENDING,
    STATUS_UP,
    AggregatedResult,
    Endpoint,
    LocationStatus,
    ProbeState,
    StatusChange,
    utcnow,
)
from app.models.endpoint import CONSENSUS_AT_LEAST, CONSENSUS_MAJORITY
from app.notifiers.base import EVENT_DOWN, EVENT_PARTIAL, EVENT_UP
from app.services import maintenance

logger = logging.getLogger(__name__)

# Added to a location's freshness window: scheduling and storing take a moment.
GRACE_SECONDS = 5.0
# Probe-offline: a location needs fresh results for at least this many
# endpoints to be judged, and is offline when at least NEARLY_ALL of them
# fail while other locations see more than half of those UP. It recovers
# once fewer than RECOVERED_BELOW of them fail.
PROBE_MIN_ENDPOINTS = 3
PROBE_NEARLY_ALL = 0.8
PROBE_RECOVERED_BELOW = 0.5
# A connectivity outcome older than this says nothing any more.
CONNECTIVITY_VALID = timedelta(seconds=90)
# aggregated_results gets a row per endpoint at least this often; after a
# pause, at most CADENCE_ROWS_PER_PASS per pass catch up, so no pass is long.
CADENCE = timedelta(minutes=5)
CADENCE_ROWS_PER_PASS = 2000
_CHUNK = 500



@dataclass(frozen=True)
class Transition:
    """An endpoint's consensus changed."""

    endpoint_id: int
    from_status: str
    to_status: str
    reason: str | None
    alert_event: str | None = None


# --- the rules (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """When the voting locations make an endpoint DOWN."""

    kind: str = CONSENSUS_MAJORITY
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``majority`` or ``atLeast:N`` (N from 1 to 100); ValueError otherwise."""
        text = (text or "").strip()
        if text == CONSENSUS_MAJORITY:
            return cls()
        kind, sep, number = text.partition(":")
        if kind == CONSENSUS_AT_LEAST and sep and number.isdigit() and 1 <= int(number) <= 100:
            return cls(CONSENSUS_AT_LEAST, int(number))
        raise ValueError("must be 'majority' or 'atLeast:N' with N from 1 to 100 ('atLeast:1': any location)")

    @property
    def text(self) -> str:
        return f"{CONSENSUS_AT_LEAST}:{self.count}" if self.kind == CONSENSUS_AT_LEAST else CONSENSUS_MAJORITY

    def holds(self, down: int, voting: int, checking: int) -> bool:
        """Whether ``down`` of ``voting`` voters make it DOWN; ``checking``:
        how many locations check the endpoint (caps N of atLeast)."""
        if down == 0:
            return False
        if self.kind == CONSENSUS_AT_LEAST:
            return down >= min(self.count or 1, max(checking, 1))
        return 2 * down > voting


def freshness_window(interval_seconds: float, timeout_seconds: float, heartbeat_seconds: float) -> timedelta:
    """How old a location's latest result may be for it to vote."""
    return timedelta(seconds=2 * interval_seconds + heartbeat_seconds + timeout_seconds + GRACE_SECONDS)


@functools.lru_cache(maxsize=1024)
def _cutoff(now: datetime, interval_seconds: float, timeout_seconds: float, heartbeat_seconds: float) -> datetime:
    """The oldest ``last_checked_at`` that is fresh at ``now``: a pass asks
    this for every state, with a handful of different settings."""
    return now - freshness_window(interval_seconds, timeout_seconds, heartbeat_seconds)


@dataclass
class LocationView:
    """One location's view of one endpoint at the moment of a vote."""

    instance_id: str
    location: str
    status: str
    checked_at: datetime | None
    is_ok: bool | None
    response_time_ms: float | None
    failure_reason: str | None
    fresh: bool
    probe_offline: bool = False

    @property
    def votes(self) -> bool:
        return self.fresh and not self.probe_offline and self.status in (STATUS_UP, STATUS_DOWN)


@dataclass
class Consensus:
    """The outcome of a vote, with what each location said."""

    status: str
    voting: int
    up: int
    down: int
    checking: int
    rule: Rule
    average_ms: float | None
    min_ms: float | None
    max_ms: float | None
    reason: str | None
    locations: list[LocationView] = field(default_factory=list)


def decide(locations: list[LocationView], rule: Rule, *, previous: str = STATUS_PENDING,
           checking: int | None = None) -> Consensus:
    """The consensus of ``locations`` under ``rule`` (see the module's step 3).

    ``previous``: the consensus before, kept when no location votes.
    ``checking``: how many locations check the endpoint (default: those given).
    """
    checking = len(locations) if checking is None else checking
    voters = [view for view in locations if view.votes]
    down = sum(1 for view in voters if view.status == STATUS_DOWN)
    up = len(voters) - down
    if not voters:
        status = previous
    elif down == 0:
        status = STATUS_UP
    elif rule.holds(down, len(voters), checking):
        status = STATUS_DOWN
    else:
        status = STATUS_PARTIAL
    times = [view.response_time_ms for view in voters if view.response_time_ms is not None]
    return Consensus(
        status=status, voting=len(voters), up=up, down=down, checking=checking, rule=rule,
        average_ms=sum(times) / len(times) if times else None,
        min_ms=min(times) if times else None, max_ms=max(times) if times else None,
        reason=summarize(status, voters, checking), locations=locations,
    )


def summarize(status: str, voters: list[LocationView], checking: int) -> str | None:
    """What people are told: "DOWN from 2 of 3 locations: frankfurt (HTTP
    502), virginia (timeout); singapore UP". A cluster of one location says
    just its reason, as a standalone monitor would."""
    failing = [view for view in voters if view.status == STATUS_DOWN or view.is_ok is False]
    if not failing:
        return None
    if checking <= 1 and len(voters) == 1:
        return voters[0].failure_reason
    voters = sorted(voters, key=lambda view: view.location)
    down = [view for view in voters if view.status == STATUS_DOWN]
    up = [view for view in voters if view.status != STATUS_DOWN]
    if not down:
        seen = ", ".join(f"{view.location} ({view.failure_reason or 'failed'})" for view in failing)
        return f"failing checks below the threshold from {len(failing)} of {len(voters)} locations: {seen}"
    said = ", ".join(f"{view.location} ({view.failure_reason or 'DOWN'})" for view in down)
    text = f"DOWN from {len(down)} of {len(voters)} locations: {said}"
    if up:
        text += "; " + ", ".join(view.location for view in up) + " UP"
    return text


def alert_for(new_status: str, alerted: str | None, alert_on_partial: bool) -> tuple[str | None, str | None]:
    """(alert to raise or None, the alerted status after it) for a change.

    DOWN pages once per incident (DOWN -> PARTIAL -> DOWN pages once), the
    way back to UP once; PARTIAL only for endpoints that ask for it.
    """
    if new_status == STATUS_DOWN and alerted != STATUS_DOWN:
        return EVENT_DOWN, STATUS_DOWN
    if new_status == STATUS_UP and alerted in (STATUS_DOWN, STATUS_PARTIAL):
        return EVENT_UP, STATUS_UP
    if new_status == STATUS_PARTIAL and alert_on_partial and alerted not in (STATUS_DOWN, STATUS_PARTIAL):
        return EVENT_PARTIAL, STATUS_PARTIAL
    return None, alerted


def probe_verdict(mine: dict[int, bool], seen_up_elsewhere: set[int], *, offline: bool,
                  connectivity_failed: str | None) -> str | None:
    """Why a location is probe-offline now, or None when it is not.

    ``mine``: its fresh latest outcome per endpoint (True: ok).
    ``seen_up_elsewhere``: endpoints another voting location sees ok.
    """
    if connectivity_failed:
        return connectivity_failed
    failing = {endpoint_id for endpoint_id, ok in mine.items() if not ok}
    total = len(mine)
    if offline:
        # Hysteresis: back only once most of its endpoints pass again.
        if total and len(failing) < PROBE_RECOVERED_BELOW * total:
            return None
        return "still sees most of its endpoints DOWN"
    if total < PROBE_MIN_ENDPOINTS or len(failing) < PROBE_NEARLY_ALL * total:
        return None
    up_elsewhere = len(failing & seen_up_elsewhere)
    if 2 * up_elsewhere > len(failing):
        return (f"sees {len(failing)} of its {total} endpoints DOWN while other locations see "
                f"{up_elsewhere} of them UP")
    return None


# --- reading state ------------------------------------------------------------------


@dataclass
class _State:
    """A location_status row being worked on."""

    endpoint_id: int
    instance_id: str
    location: str
    status: str = STATUS_PENDING
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_checked_at: datetime | None = None
    last_is_ok: bool | None = None
    last_response_time_ms: float | None = None
    last_failure_reason: str | None = None
    certificate_expires_at: datetime | None = None
    # Set once per periodic pass (``_mark_fresh``), so the probe judgement
    # and the vote do not work it out twice; None: work it out.
    fresh: bool | None = None

    def row(self, now: datetime) -> dict:
        return {
            "endpoint_id": self.endpoint_id, "instance_id": self.instance_id, "location": self.location,
            "status": self.status, "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes, "last_checked_at": self.last_checked_at,
            "last_is_ok": self.last_is_ok, "last_response_time_ms": self.last_response_time_ms,
            "last_failure_reason": self.last_failure_reason,
            "certificate_expires_at": self.certificate_expires_at, "updated_at": now,
        }


_STATE_COLUMNS = (LocationStatus.endpoint_id, LocationStatus.instance_id, LocationStatus.location,
                  LocationStatus.status, LocationStatus.consecutive_failures,
                  LocationStatus.consecutive_successes, LocationStatus.last_checked_at,
                  LocationStatus.last_is_ok, LocationStatus.last_response_time_ms,
                  LocationStatus.last_failure_reason, LocationStatus.certificate_expires_at)

_ENDPOINT_COLUMNS = (Endpoint.id, Endpoint.name, Endpoint.is_paused, Endpoint.status, Endpoint.alerted_status,
                     Endpoint.alert_on_partial, Endpoint.failure_threshold, Endpoint.success_threshold,
                     Endpoint.interval_seconds, Endpoint.timeout_seconds, Endpoint.consensus_rule,
                     Endpoint.consensus_min_down, Endpoint.location_ids, Endpoint.locations_voting,
                     Endpoint.locations_up, Endpoint.locations_down, Endpoint.last_checked_at,
                     Endpoint.last_response_time_ms, Endpoint.last_failure_reason,
                     Endpoint.consensus_recorded_at, Endpoint.consecutive_failures,
                     Endpoint.consecutive_successes, Endpoint.created_at, Endpoint.group_name)


def _chunks(ids: list) -> Iterable[list]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _states(endpoint_ids: list[int] | None, *, instance_id: str | None = None,
            lock: bool = False, lean: bool = False) -> dict[int, dict[str, _State]]:
    """Every location's state of these endpoints (all endpoints for None);
    only ``instance_id``'s when given, locked (in key order) with ``lock``;
    ``lean``: without the certificate, which no vote needs."""
    out: dict[int, dict[str, _State]] = {}
    columns = _STATE_COLUMNS[:-1] if lean else _STATE_COLUMNS
    queries = ([select(*columns)] if endpoint_ids is None else
               [select(*columns).where(LocationStatus.endpoint_id.in_(chunk))
                for chunk in _chunks(endpoint_ids)])
    if instance_id is not None:
        queries = [query.where(LocationStatus.instance_id == instance_id) for query in queries]
    if lock:
        queries = [query.order_by(LocationStatus.endpoint_id).with_for_update() for query in queries]
    for query in queries:
        for row in db.session.execute(query):
            out.setdefault(row[0], {})[row[1]] = _State(*row)
    return out


def _endpoints(endpoint_ids: list[int] | None, *, lock: bool) -> dict[int, object]:
    """Endpoint rows for the vote; ``lock``: hold them until commit, in id
    order. NO KEY UPDATE, not UPDATE: it does not conflict with the KEY
    SHARE lock that inserting results referencing the endpoint takes."""
    out = {}
    queries = ([select(*_ENDPOINT_COLUMNS)] if endpoint_ids is None else
               [select(*_ENDPOINT_COLUMNS).where(Endpoint.id.in_(chunk)) for chunk in _chunks(endpoint_ids)])
    for query in queries:
        if lock:
            query = query.order_by(Endpoint.id).with_for_update(key_share=True)
        for row in db.session.execute(query):
            out[row.id] = row
    return out


@dataclass
class _Probe:
    instance_id: str
    offline_since: datetime | None = None
    offline_reason: str | None = None
    votes_from: datetime | None = None
    heartbeat_interval: int | None = None
    connectivity_ok: bool | None = None
    connectivity_error: str | None = None
    connectivity_checked_at: datetime | None = None

    def connectivity_failure(self, now: datetime) -> str | None:
        if self.connectivity_ok is False and self.connectivity_checked_at is not None \
                and now - self.connectivity_checked_at <= CONNECTIVITY_VALID:
            return f"its connectivity check failed: {self.connectivity_error or 'no connection'}"
        return None


def _probes() -> dict[str, _Probe]:
    table = ProbeState.__table__.c
    return {row[0]: _Probe(*row) for row in db.session.execute(select(
        table.instance_id, table.offline_since, table.offline_reason, table.votes_from,
        table.heartbeat_interval, table.connectivity_ok, table.connectivity_error,
        table.connectivity_checked_at))}


def _own_id() -> str:
    from app.services import configuration

    return configuration.instance_id()


def _default_heartbeat() -> int:
    return current_app.config["SETTINGS"].heartbeat_interval


def _checking(endpoint, states: dict[str, _State]) -> list[_State]:
    """The states of the locations that check ``endpoint``."""
    if endpoint.location_ids is None:
        return list(states.values())
    return [state for instance_id, state in states.items() if instance_id in endpoint.location_ids]


def _views(endpoint, states: dict[str, _State], probes: dict[str, _Probe], now: datetime,
           own_id: str, default_heartbeat: int) -> list[LocationView]:
    views = []
    for state in _checking(endpoint, states):
        probe = probes.get(state.instance_id)
        views.append(LocationView(
            state.instance_id, state.location, state.status, state.last_checked_at, state.last_is_ok,
            state.last_response_time_ms, state.last_failure_reason,
            _fresh(state, endpoint, probe, now, own_id, default_heartbeat),
            probe_offline=bool(probe and probe.offline_since),
        ))
    return views


def _mark_fresh(states: dict[int, dict[str, _State]], endpoints: dict, probes: dict[str, _Probe], now: datetime,
                own_id: str, heartbeat: int) -> None:
    """Work out once whether each state is fresh at ``now``."""
    for endpoint_id, by in states.items():
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None:
            continue
        for state in by.values():
            state.fresh = _fresh(state, endpoint, probes.get(state.instance_id), now, own_id, heartbeat)


def _checking_count(endpoint, states: dict[str, _State], members: int) -> int:
    """How many locations check ``endpoint``: those it names, or every member
    of the cluster (at least those that have reported on it)."""
    if endpoint.location_ids is not None:
        return len(endpoint.location_ids)
    return max(len(states), members, 1)


def _members() -> int:
    """Active members of the cluster, as the registry knows them (0 but on a primary)."""
    from app.models import MonitoringInstance
    from app.services import configuration

    if configuration.is_dependent():
        return 0  # a candidate's copy of the membership: its own consensus is of its one location
    return db.session.execute(select(func.count()).select_from(MonitoringInstance)
                              .where(MonitoringInstance.status == "active")).scalar_one()


def _rule(endpoint) -> Rule:
    if endpoint.consensus_rule == CONSENSUS_AT_LEAST:
        return Rule(CONSENSUS_AT_LEAST, endpoint.consensus_min_down or 1)
    return Rule()


def vote(endpoint, states: dict[str, _State], probes: dict[str, _Probe], now: datetime, own_id: str,
         default_heartbeat: int, members: int = 1) -> Consensus:
    """The consensus of one endpoint from its locations' states.

    A new endpoint stays PENDING until every location that checks it has
    voted, or one freshness window has passed since it was made: the first
    location to report does not decide alone for a cluster.
    """
    consensus = decide(_views(endpoint, states, probes, now, own_id, default_heartbeat), _rule(endpoint),
                       previous=endpoint.status, checking=_checking_count(endpoint, states, members))
    if (endpoint.status == STATUS_PENDING and consensus.status != STATUS_PENDING
            and consensus.voting < consensus.checking and endpoint.created_at is not None
            and now < endpoint.created_at + freshness_window(endpoint.interval_seconds, endpoint.timeout_seconds,
                                                             default_heartbeat)):
        consensus.status = STATUS_PENDING
    return consensus


# --- applying results -------------------------------------------------------------


def _certificate_expiry(metadata) -> datetime | None:
    info = (metadata or {}).get("certificateInfo") if isinstance(metadata, dict) else None
    valid_to = info.get("validTo") if isinstance(info, dict) else None
    if not isinstance(valid_to, str):
        return None
    try:
        moment = datetime.fromisoformat(valid_to)
    except ValueError:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _apply(state: _State, endpoint, rows: list[dict], votes_from: datetime | None,
           late_before: datetime | None = None) -> bool:
    """Apply one location's results to its state, oldest first; True if it moved.

    Results checked before ``votes_from`` (sent after a silence), or long
    enough before ``late_before`` that they must have waited in an outbox,
    are history and are skipped.
    """
    from app.services.results import next_status

    moved = False
    oldest_on_time = (late_before - timedelta(seconds=endpoint.timeout_seconds + GRACE_SECONDS)
                      if late_before is not None else None)
    for row in sorted(rows, key=lambda r: r["checked_at"]):
        checked_at = row["checked_at"]
        if votes_from is not None and checked_at < votes_from:
            continue  # delivered after a silence: history, not a vote
        if oldest_on_time is not None and checked_at < oldest_on_time:
            continue  # waited in an outbox: history, not a vote
        if state.last_checked_at is not None and checked_at <= state.last_checked_at:
            continue  # older than what this location already said
        if row["is_ok"]:
            state.consecutive_successes, state.consecutive_failures = state.consecutive_successes + 1, 0
        else:
            state.consecutive_failures, state.consecutive_successes = state.consecutive_failures + 1, 0
        state.status = next_status(state.status, state.consecutive_failures, state.consecutive_successes,
                                   failure_threshold=endpoint.failure_threshold,
                                   success_threshold=endpoint.success_threshold)
        state.last_checked_at = checked_at
        state.last_is_ok = bool(row["is_ok"])
        state.last_response_time_ms = row.get("response_time_ms")
        state.last_failure_reason = row.get("failure_reason")
        expiry = _certificate_expiry(row.get("check_metadata"))
        if expiry is not None or row.get("check_type") == "http":
            state.certificate_expires_at = expiry
        moved = True
    return moved


def _upsert_states(states: list[_State], now: datetime) -> None:
    if not states:
        return
    make = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = make(LocationStatus.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["endpoint_id", "instance_id"],
        set_={name: stmt.excluded[name] for name in (
            "location", "status", "consecutive_failures", "consecutive_successes", "last_checked_at",
            "last_is_ok", "last_response_time_ms", "last_failure_reason", "certificate_expires_at",
            "updated_at")},
    )
    # In key order, so two writers never wait on each other's rows crosswise.
    db.session.execute(stmt, [s.row(now) for s in sorted(states, key=lambda s: (s.endpoint_id, s.instance_id))])


def ingest(rows: list[dict], *, instance_id: str, location: str, own: bool,
           now: datetime | None = None, late_after: float | None = None) -> list[Transition]:
    """Apply one location's stored result rows, and vote again where that can
    change the consensus.

    Called after ``results.store_results`` in the same transaction (which
    the caller commits): for results made here (``own``: every endpoint of
    the batch is voted on, which keeps its row's "last checked" current) and
    for a dependent's heartbeat (only endpoints where that location's
    verdict changed or it just became fresh). The stored insert took the
    database's write lock (SQLite); the endpoint rows are locked here
    (PostgreSQL), so votes on one endpoint happen one after the other and
    each sees the states before it.
    ``late_after``: seconds (beyond the check's timeout) after which a
    dependent's result arrives too late to vote. Returns the consensus changes.
    """
    if not rows:
        return []
    if now is None:
        # Results made here are never late: vote as of when they were made
        # (the same moment, but for a slow check's few seconds). A
        # dependent's are judged by when they arrive.
        now = max(row["checked_at"] for row in rows) if own else utcnow()
    endpoint_ids = sorted({row["endpoint_id"] for row in rows})
    probes = _probes()
    probe = probes.get(instance_id)
    own_id, heartbeat = _own_id(), _default_heartbeat()
    if own:
        endpoints = _endpoints(endpoint_ids, lock=True)
        states = _states(endpoint_ids)
    else:
        # A dependent's heartbeat: its own states (locked, in key order),
        # and the endpoints' settings; the endpoints are locked below only
        # where a vote is due.
        endpoints = _endpoints(endpoint_ids, lock=False)
        states = _states(endpoint_ids, instance_id=instance_id, lock=True)
    votes_from = None if own or probe is None else probe.votes_from
    late_before = now - timedelta(seconds=late_after) if late_after is not None and not own else None
    by_endpoint: dict[int, list[dict]] = {}
    for row in rows:
        by_endpoint.setdefault(row["endpoint_id"], []).append(row)
    moved, newest, due = [], {}, []
    for endpoint_id, endpoint_rows in by_endpoint.items():
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or endpoint.is_paused:
            continue  # deleted meanwhile; a paused endpoint's manual checks count for nothing
        if endpoint.location_ids is not None and instance_id not in endpoint.location_ids:
            continue  # not one of its locations: the results are kept, nothing more
        state = states.setdefault(endpoint_id, {}).get(instance_id)
        if state is None:
            state = states[endpoint_id][instance_id] = _State(endpoint_id, instance_id, location)
        before = (state.status, _fresh(state, endpoint, probe, now, own_id, heartbeat))
        state.location = location
        if _apply(state, endpoint, endpoint_rows, votes_from, late_before):
            moved.append(state)
            newest[endpoint_id] = state.last_checked_at
            # Only a location whose verdict changed, or that just became
            # fresh, can change the consensus; the rest waits for the pass.
            if own or before != (state.status, True) or endpoint.status == STATUS_PENDING:
                due.append(endpoint_id)
    _upsert_states(moved, now)
    # Judged against the others only where there are others (a standalone has none).
    compared = not own or any(len(by) > 1 for by in states.values())
    # Judging reads all of the location's states: only when this batch looks
    # like a probe going offline (nearly all of it failing), or the location
    # is offline or failing its connectivity check now. A few failures in a
    # batch do not make it offline; the periodic pass judges every location
    # from all its states every few seconds anyway.
    failures = sum(1 for row in rows if not row["is_ok"])
    looks_offline = failures >= PROBE_MIN_ENDPOINTS and failures >= PROBE_NEARLY_ALL * len(rows)
    if ((compared and looks_offline) or (probe is not None and probe.offline_since)
            or (probe is not None and probe.connectivity_failure(now))):
        _judge_probes([instance_id], probes, now, own_id=own_id)
    if not own and due:
        endpoints = _endpoints(due, lock=True)
        states = _states(due)
    return _settle(endpoints, states, probes, now, due, changed_at=newest,
                   mirror=instance_id if own else None)


def _settle(endpoints: dict, states: dict[int, dict[str, _State]], probes: dict[str, _Probe], now: datetime,
            endpoint_ids: Iterable[int], *, changed_at: dict[int, datetime] | None = None,
            mirror: str | None = None) -> list[Transition]:
    """Vote on ``endpoint_ids`` and write what changed: the endpoint's
    consensus columns, a status change with its alert, an aggregated row."""
    own_id, heartbeat, members = _own_id(), _default_heartbeat(), _members()
    coverage = maintenance.Coverage()  # read only if a change would alert
    updates, transitions, aggregated, changes = [], [], [], []
    for endpoint_id in sorted(set(endpoint_ids)):
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or endpoint.is_paused:
            continue
        found = states.get(endpoint_id, {})
        consensus = vote(endpoint, found, probes, now, own_id, heartbeat, members)
        checking = _checking(endpoint, found)
        seen = [s.last_checked_at for s in checking if s.last_checked_at is not None]
        single = len(checking) == 1 and consensus.checking <= 1
        values = {
            "_id": endpoint_id,
            "status": consensus.status,
            "status_changed_at": None,
            "alerted_status": endpoint.alerted_status,
            "locations_voting": consensus.voting,
            "locations_up": consensus.up,
            "locations_down": consensus.down,
            "last_checked_at": max(seen) if seen else endpoint.last_checked_at,
            "last_response_time_ms": (checking[0].last_response_time_ms if single else consensus.average_ms),
            "last_failure_reason": (checking[0].last_failure_reason if single else consensus.reason),
            "consecutive_failures": endpoint.consecutive_failures,
            "consecutive_successes": endpoint.consecutive_successes,
            "consensus_recorded_at": endpoint.consensus_recorded_at,
        }
        if mirror is not None and mirror in found:
            # The endpoint's own counters are this instance's location's.
            values["consecutive_failures"] = found[mirror].consecutive_failures
            values["consecutive_successes"] = found[mirror].consecutive_successes
        if consensus.status != endpoint.status:
            when = (changed_at or {}).get(endpoint_id) or now
            event, alerted = alert_for(consensus.status, endpoint.alerted_status, endpoint.alert_on_partial)
            held = (coverage.window_for(endpoint_id, endpoint.group_name, when)
                    if event is not None else None)
            if held is not None:
                # In maintenance: recorded, not alerted; what was alerted
                # stays, so the window's end can tell what is still owed.
                held_back = {"suppressed_alert": event, "suppressed_by": maintenance.reason_text(held)}
                event, alerted = None, endpoint.alerted_status
            else:
                held_back = {"suppressed_alert": None, "suppressed_by": None}
            values["alerted_status"] = alerted
            values["status_changed_at"] = when
            values["consensus_recorded_at"] = now
            changes.append({"endpoint_id": endpoint_id, "from_status": endpoint.status,
                            "to_status": consensus.status, "changed_at": when, "reason": consensus.reason,
                            "alert_event": event, **held_back})
            transitions.append(Transition(endpoint_id, endpoint.status, consensus.status, consensus.reason, event))
            aggregated.append(aggregated_row(endpoint_id, consensus, now, is_change=True))
            logger.info("endpoint %s (%s) is %s (was %s)%s", endpoint_id, endpoint.name, consensus.status,
                        endpoint.status, f": {consensus.reason}" if consensus.reason else "")
        updates.append(values)
    _write_endpoints(updates)
    if changes:
        # Core rows, not ORM objects: one multi-row insert, no identity map.
        db.session.execute(StatusChange.__table__.insert(), changes)
    if aggregated:
        db.session.execute(AggregatedResult.__table__.insert(), aggregated)
    return transitions


def _write_endpoints(updates: list[dict]) -> None:
    if not updates:
        return
    changed = [u for u in updates if u["status_changed_at"] is not None]
    same = [{k: v for k, v in u.items() if k != "status_changed_at"} for u in updates
            if u["status_changed_at"] is None]
    table = Endpoint.__table__
    for batch in (changed, same):
        if batch:
            db.session.execute(
                update(table).where(table.c.id == bindparam("_id"))
                .values({key: bindparam(key) for key in batch[0] if key != "_id"}),
                batch,
            )


def aggregated_row(endpoint_id: int, consensus: Consensus, now: datetime, *, is_change: bool) -> dict:
    """An ``aggregated_results`` row of a vote."""
    return {
        "endpoint_id": endpoint_id, "computed_at": now, "consensus": consensus.status,
        "locations_up": consensus.up, "locations_down": consensus.down, "locations_total": consensus.voting,
        "avg_response_time_ms": consensus.average_ms, "min_response_time_ms": consensus.min_ms,
        "max_response_time_ms": consensus.max_ms, "is_change": is_change, "reason": consensus.reason,
        "details": {"rule": consensus.rule.text, "checking": consensus.checking, "locations": [
            {"instanceId": v.instance_id, "location": v.location, "status": v.status,
             "responseTimeMs": v.response_time_ms,
             "checkedAt": v.checked_at.isoformat() if v.checked_at else None,
             "fresh": v.fresh, "probeOffline": v.probe_offline}
            for v in consensus.locations]},
    }


# --- probes -------------------------------------------------------------------------


def _judge_probes(instance_ids: list[str], probes: dict[str, _Probe], now: datetime, *, own_id: str,
                  states: dict[int, dict[str, _State]] | None = None, endpoints: dict | None = None) -> None:
    """Decide whether each location in ``instance_ids`` is probe-offline,
    from the fresh states of all locations, and record what changed.

    ``states``/``endpoints``: everything, when the caller has read it all
    already (the periodic pass); otherwise each location's own rows are read.
    """
    heartbeat = _default_heartbeat()
    changed = []
    grouped: dict[str, list] = {}
    if states is not None:  # every location's states in one walk
        for eid, by in states.items():
            endpoint = endpoints.get(eid)
            if endpoint is not None:
                for other_id, state in by.items():
                    grouped.setdefault(other_id, []).append((state, endpoint))
    for instance_id in instance_ids:
        probe = probes.get(instance_id) or _Probe(instance_id)
        if states is None:
            mine_states, config = _location_rows(instance_id, now)
        else:
            mine_states, config = grouped.get(instance_id, []), None
        mine: dict[int, bool] = {}
        for state, endpoint in mine_states:
            if endpoint.is_paused or state.last_is_ok is None:
                continue
            if _fresh(state, endpoint, probe, now, own_id, heartbeat):
                mine[state.endpoint_id] = state.last_is_ok
        failing = [eid for eid, ok in mine.items() if not ok]
        elsewhere = set()
        if failing and not probe.offline_since and len(failing) >= PROBE_NEARLY_ALL * max(len(mine), 1):
            others = states if states is not None else _states(failing)
            ends = endpoints if endpoints is not None else (config or {})
            for eid in failing:
                for other_id, state in others.get(eid, {}).items():
                    other = probes.get(other_id)
                    if other_id == instance_id or (other and other.offline_since) or not state.last_is_ok:
                        continue
                    endpoint = ends.get(eid)
                    if endpoint is not None and _fresh(state, endpoint, other, now, own_id, heartbeat):
                        elsewhere.add(eid)
                        break
        reason = probe_verdict(mine, elsewhere, offline=bool(probe.offline_since),
                               connectivity_failed=probe.connectivity_failure(now))
        if reason and not probe.offline_since:
            probe.offline_since, probe.offline_reason = now, reason
            logger.warning("location of instance %s is probe-offline: %s; it does not vote until it "
                           "recovers", instance_id, reason)
        elif not reason and probe.offline_since:
            logger.info("location of instance %s is back (probe-offline since %s)", instance_id,
                        probe.offline_since.isoformat())
            probe.offline_since, probe.offline_reason = None, None
        elif reason and probe.offline_reason != reason and probe.connectivity_failure(now):
            probe.offline_reason = reason
        else:
            continue
        probes[instance_id] = probe
        changed.append(probe)
    for probe in changed:
        _save_probe(probe, now)


def _fresh(state: _State, endpoint, probe: _Probe | None, now: datetime, own_id: str, heartbeat: int) -> bool:
    if state.fresh is not None:
        return state.fresh
    beat = 0 if state.instance_id == own_id else (probe.heartbeat_interval if probe and probe.heartbeat_interval
                                                  else heartbeat)
    return (state.last_checked_at is not None and
            state.last_checked_at >= _cutoff(now, endpoint.interval_seconds, endpoint.timeout_seconds, beat))


def _location_rows(instance_id: str, now: datetime) -> tuple[list[tuple[_State, object]], dict]:
    """One location's states with their endpoints' settings."""
    states = _states(None, instance_id=instance_id, lean=True)
    endpoints = _endpoints(sorted(states), lock=False)
    return [(state, endpoints[eid]) for eid, by in states.items() for state in by.values()
            if eid in endpoints], endpoints


def _save_probe(probe: _Probe, now: datetime) -> None:
    values = {"instance_id": probe.instance_id, "offline_since": probe.offline_since,
              "offline_reason": probe.offline_reason, "votes_from": probe.votes_from,
              "heartbeat_interval": probe.heartbeat_interval, "connectivity_ok": probe.connectivity_ok,
              "connectivity_error": probe.connectivity_error,
              "connectivity_checked_at": probe.connectivity_checked_at, "updated_at": now}
    make = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = make(ProbeState.__table__).values(values)
    stmt = stmt.on_conflict_do_update(index_elements=["instance_id"],
                                      set_={k: stmt.excluded[k] for k in values if k != "instance_id"})
    db.session.execute(stmt)


def note_heartbeat(instance_id: str, *, previous_heartbeat_at: datetime | None, silence_limit: float,
                   heartbeat_interval: int | None, connectivity: dict | None, now: datetime | None = None) -> None:
    """Record what a dependent's heartbeat says about it as a probe, before
    its results are applied.

    After a silence longer than ``silence_limit`` seconds (or on its first
    heartbeat), results it checked before now are history: its outbox from
    the outage is stored, but only results checked from now on vote.
    ``connectivity``: its check of CONNECTIVITY_CHECK_TARGET (ok, error, checkedAt).
    """
    now = now or utcnow()
    probe = _probes().get(instance_id) or _Probe(instance_id)
    if previous_heartbeat_at is None or (now - previous_heartbeat_at).total_seconds() > silence_limit:
        probe.votes_from = now
        logger.info("instance %s is back after %s; results it checked before %s are history, not votes",
                    instance_id, "its first heartbeat" if previous_heartbeat_at is None else
                    f"{(now - previous_heartbeat_at).total_seconds():.0f} s of silence", now.isoformat())
    probe.heartbeat_interval = heartbeat_interval
    if connectivity is not None:
        probe.connectivity_ok = connectivity.get("ok")
        probe.connectivity_error = connectivity.get("error")
        probe.connectivity_checked_at = connectivity.get("checkedAt")
    _save_probe(probe, now)


def note_connectivity(ok: bool | None, error: str | None, *, now: datetime | None = None) -> None:
    """Record this instance's own connectivity check (None: none configured). Commits."""
    now = now or utcnow()
    own_id = _own_id()
    probe = _probes().get(own_id) or _Probe(own_id)
    probe.connectivity_ok, probe.connectivity_error = ok, error
    probe.connectivity_checked_at = now if ok is not None else None
    _save_probe(probe, now)
    db.session.commit()


def own_connectivity() -> dict | None:
    """This instance's latest connectivity outcome, for its heartbeats."""
    probe = _probes().get(_own_id())
    if probe is None or probe.connectivity_ok is None or probe.connectivity_checked_at is None:
        return None
    return {"ok": probe.connectivity_ok, "error": probe.connectivity_error,
            "checkedAt": probe.connectivity_checked_at.isoformat()}


# --- the periodic pass ----------------------------------------------------------------


def reevaluate(now: datetime | None = None) -> dict:
    """Judge every location as a probe, vote on every endpoint, and write
    what changed and the regular aggregated rows. Commits.

    1. Read everything without locks and vote.
    2. Where the consensus or a probe changed, take the write lock and the
       endpoints' row locks, read their states again, and settle them (a
       result stored between 1 and 2 is counted).
    3. Endpoints whose last aggregated row is older than CADENCE get one
       (at most CADENCE_ROWS_PER_PASS a pass).
    """
    now = now or utcnow()
    own_id, heartbeat, members = _own_id(), _default_heartbeat(), _members()
    endpoints = _endpoints(None, lock=False)
    states = _states(None, lean=True)
    probes = _probes()
    db.session.commit()  # end the read; nothing is held while voting
    _mark_fresh(states, endpoints, probes, now, own_id, heartbeat)
    known = {instance_id for by in states.values() for instance_id in by} | set(probes)
    before = {i: bool(p.offline_since) for i, p in probes.items()}
    _judge_probes(sorted(known), probes, now, own_id=own_id, states=states, endpoints=endpoints)
    probes_changed = sorted(i for i in known if bool(probes.get(i) and probes[i].offline_since) != before.get(i, False))
    stale, due = [], []
    for endpoint_id, endpoint in endpoints.items():
        if endpoint.is_paused:
            continue
        consensus = vote(endpoint, states.get(endpoint_id, {}), probes, now, own_id, heartbeat, members)
        if (consensus.status, consensus.voting, consensus.up, consensus.down) != (
                endpoint.status, endpoint.locations_voting, endpoint.locations_up, endpoint.locations_down):
            stale.append(endpoint_id)
        elif endpoint.consensus_recorded_at is None or now - endpoint.consensus_recorded_at >= CADENCE:
            due.append((endpoint_id, consensus))
    transitions: list[Transition] = []
    if stale:
        _take_write_lock()
        for chunk in _chunks(stale):
            locked = _endpoints(chunk, lock=True)
            transitions += _settle(locked, _states(chunk), probes, now, chunk)
    due = due[:CADENCE_ROWS_PER_PASS]
    if due:
        _take_write_lock()
        db.session.execute(AggregatedResult.__table__.insert(),
                           [aggregated_row(eid, consensus, now, is_change=False) for eid, consensus in due])
        table = Endpoint.__table__
        db.session.execute(update(table).where(table.c.id == bindparam("_id"))
                           .values(consensus_recorded_at=bindparam("_at")),
                           [{"_id": eid, "_at": now} for eid, _ in due])
    db.session.commit()
    return {"endpoints": len(endpoints), "settled": len(stale), "recorded": len(due),
            "transitions": transitions, "probesChanged": probes_changed}


def _take_write_lock() -> None:
    # SQLite: the first write takes the database's write lock, so reads after
    # it see every committed result and no writer slips in between.
    if db.engine.dialect.name == "sqlite":
        from app.services import configuration

        configuration.lock_instance()


# --- readers ----------------------------------------------------------------------------


@dataclass
class LocationRow:
    """A location's view of an endpoint, as pages and the API show it."""

    instance_id: str
    instance_name: str
    location: str
    status: str
    response_time_ms: float | None
    checked_at: datetime | None
    failure_reason: str | None
    fresh: bool
    probe_offline: bool
    probe_offline_reason: str | None
    is_self: bool = False


def locations_of(endpoints: list, now: datetime | None = None) -> dict[int, list[LocationRow]]:
    """Each endpoint's locations, for readers: every location that checks it,
    with freshness and probe state as the vote sees them (a fixed number of
    queries, whatever the number of endpoints)."""
    from app.models import MonitoringInstance

    if not endpoints:
        return {}
    now = now or utcnow()
    own_id, heartbeat = _own_id(), _default_heartbeat()
    ids = [endpoint.id for endpoint in endpoints]
    states = _states(ids if len(ids) <= 2 * _CHUNK else None)
    probes = _probes()
    names = dict(db.session.execute(select(MonitoringInstance.id, MonitoringInstance.name)).all())
    names.setdefault(own_id, current_app.config["SETTINGS"].instance_name)
    out = {}
    for endpoint in endpoints:
        views = _views(endpoint, states.get(endpoint.id, {}), probes, now, own_id, heartbeat)
        rows = [LocationRow(v.instance_id, names.get(v.instance_id, v.instance_id[:8]), v.location, v.status,
                            v.response_time_ms, v.checked_at, v.failure_reason, v.fresh, v.probe_offline,
                            probes[v.instance_id].offline_reason if v.probe_offline else None,
                            is_self=v.instance_id == own_id)
                for v in views]
        rows.sort(key=lambda r: (r.instance_id != own_id, r.location, r.instance_name))
        out[endpoint.id] = rows
    return out


def probe_states() -> dict[str, _Probe]:
    """Every known location's probe state, by instance id."""
    return _probes()


def uptimes(endpoint_ids: list[int], now: datetime | None = None,
            spans: Iterable[timedelta] = (timedelta(hours=24),), *,
            coverage: maintenance.Coverage | None = None) -> dict[int, dict[timedelta, float | None]]:
    """Consensus uptime per endpoint over each span, time-weighted from
    ``aggregated_results`` change rows: the share of time the consensus was
    UP or PARTIAL (reachable by the rule) of the time it was decided (UP,
    PARTIAL or DOWN), time in maintenance windows left out of both. None
    where nothing was decided in the span."""
    now = now or utcnow()
    spans = list(spans)
    if not endpoint_ids or not spans:
        return {}
    start = now - max(spans)
    table = AggregatedResult.__table__.c
    timelines: dict[int, list[tuple[datetime, str]]] = {}
    for chunk in _chunks(sorted(endpoint_ids)):
        # The status at the window's start: each endpoint's newest change
        # before it, one row each from the index of change rows (a regular
        # row is written every CADENCE; pruning keeps each endpoint's newest
        # change, see services/retention.py).
        for endpoint_id, consensus in db.session.execute(_status_before(chunk, start)):
            if consensus is not None:
                timelines.setdefault(endpoint_id, []).append((start, consensus))
        within = (select(table.endpoint_id, table.computed_at, table.consensus)
                  .where(table.endpoint_id.in_(chunk), table.is_change == true(), table.computed_at >= start)
                  .order_by(table.endpoint_id, table.computed_at, table.id))
        for endpoint_id, computed_at, consensus in db.session.execute(within):
            timelines.setdefault(endpoint_id, []).append((computed_at, consensus))
    held = maintenance.covered_spans(list(endpoint_ids), start, now, coverage=coverage)
    out = {}
    for endpoint_id in endpoint_ids:
        timeline = timelines.get(endpoint_id, [])
        out[endpoint_id] = {span: _weighted(timeline, now - span, now, held.get(endpoint_id, ()))
                            for span in spans}
    return out


def _status_before(endpoint_ids: list[int], start: datetime):
    """A query of (endpoint id, the consensus of its newest change row
    before ``start``, or None): a correlated subquery with LIMIT 1 per
    endpoint, which ``ix_aggregated_results_changes`` answers in one seek."""
    table = AggregatedResult.__table__.c
    endpoints = Endpoint.__table__.c
    newest = (select(table.consensus)
              .where(table.endpoint_id == endpoints.id, table.is_change == true(), table.computed_at < start)
              .order_by(table.computed_at.desc(), table.id.desc()).limit(1).scalar_subquery())
    return select(endpoints.id, newest).where(endpoints.id.in_(endpoint_ids))


def _weighted(timeline: list[tuple[datetime, str]], start: datetime, end: datetime,
              excluded: Iterable[tuple[datetime, datetime]] = ()) -> float | None:
    excluded = list(excluded)
    up = decided = 0.0
    for index, (moment, status) in enumerate(timeline):
        until = timeline[index + 1][0] if index + 1 < len(timeline) else end
        lo, hi = max(moment, start), min(until, end)
        if hi <= lo or status not in (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN):
            continue
        # Spans are merged, so their overlaps with this stretch never overlap each other.
        seconds = (hi - lo).total_seconds() - sum(
            max((min(hi, finish) - max(lo, begin)).total_seconds(), 0.0) for begin, finish in excluded)
        decided += seconds
        if status != STATUS_DOWN:
            up += seconds
    return 100.0 * up / decided if decided else None


def forget_instance(instance_id: str) -> None:
    """Drop a removed instance's location states and probe state (the caller commits)."""
    db.session.execute(LocationStatus.__table__.delete().where(LocationStatus.instance_id == instance_id))
    db.session.execute(ProbeState.__table__.delete().where(ProbeState.instance_id == instance_id))


def api_answers(endpoints: list, now: datetime | None = None) -> dict[int, dict]:
    """The ``consensus`` object of each endpoint's API answer (the seed's
    ``EndpointWithLocations``): status, voting and UP locations, average
    response time over the voters, 24 h consensus uptime, rule, and every
    location that checks it. A fixed number of queries for any number."""
    now = now or utcnow()
    locations = locations_of(endpoints, now)
    day = timedelta(hours=24)
    uptime = uptimes([e.id for e in endpoints], now, spans=(day,))
    out = {}
    for endpoint in endpoints:
        out[endpoint.id] = {
            "status": endpoint.status,
            "totalLocations": endpoint.locations_voting,
            "successfulLocations": endpoint.locations_up,
            "averageResponseTimeMs": endpoint.last_response_time_ms,
            "uptime24h": uptime.get(endpoint.id, {}).get(day),
            "rule": _rule(endpoint).text,
            "locations": [
                {"instanceId": row.instance_id, "instanceName": row.instance_name, "location": row.location,
                 "status": row.status, "responseTimeMs": row.response_time_ms,
                 "checkedAt": row.checked_at.isoformat() if row.checked_at else None,
                 "fresh": row.fresh, "probeOffline": row.probe_offline}
                for row in locations.get(endpoint.id, [])
            ],
        }
    return out


# --- what the JSON API answers ---------------------------------------------------

class LocationAnswer(Answer):
    """One location's latest view of an endpoint, as the vote sees it."""

    instance_id: str
    instance_name: str | None
    location: str | None
    status: str | None
    response_time_ms: float | None
    checked_at: datetime | None
    fresh: bool
    probe_offline: bool


class ConsensusAnswer(Answer):
    """The ``consensus`` of an endpoint's answer (see ``api_answers``)."""

    status: str
    total_locations: int | None
    successful_locations: int | None
    average_response_time_ms: float | None
    uptime24h: float | None = Field(alias="uptime24h")  # no camel hump before a digit
    rule: str
    locations: list[LocationAnswer]
