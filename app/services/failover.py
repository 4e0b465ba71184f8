"""Automatic failover (DESIGN.md section 8): a dead primary is suspected,
its successor elected and promoted, every member follows the newest epoch,
and a primary that sees a newer one, or loses its majority, stops acting.

One ``tick`` runs every FAILOVER_CHECK_INTERVAL seconds on every clustered
instance (``workers/jobs/failover.py``):

- a dependent probes its primary's ``/sync/api/status``; after
  FAILOVER_MAX_FAILURES failures in a row it suspects it, looks for a newer
  primary among the members, and, when it is the first live candidate in
  failover order, asks every member for its vote for epoch + 1;
- a primary (or a fenced one) probes the members: a newer epoch anywhere
  makes it step down and follow; no majority in reach for longer than the
  failover delay fences it; a majority back unfences it.

Role, epoch and the vote change only through ``configuration.transition``
and ``configuration.grant_vote``, compare-and-set on the epoch, so two
processes of one instance cannot both promote it and no epoch has two
winners. Peers talk over the sync API with the cluster's join secret.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from flask import current_app
from sqlalchemy import func, select, text, update

from app.config import ROLE_DEPENDENT, ROLE_FENCED, ROLE_PRIMARY
from app.extensions import db
from app.models import MonitoringInstance, ResponseTime, utcnow
from app.services import configuration
from app.services.configuration import ClusterState
from app.services.sync.schemas import EPOCH_HEADER, SECRET_HEADER

logger = logging.getLogger(__name__)

# Failover state kept in instance_config beside the role.
PRIMARY_FAILURES = "failover_primary_failures"
SUSPECTED_SINCE = "failover_suspected_since"
# When a probe last found the primary answering: the sync stops backing off.
PRIMARY_SEEN_AT = "failover_primary_seen_at"
MAJORITY_SEEN_AT = "failover_majority_seen_at"
# The epoch the next election asks for, when an earlier one split.
NEXT_EPOCH = "failover_next_epoch"
# Where the last candidate this instance voted for can be reached: a hint
# for finding the new primary.
VOTED_URL = "failover_voted_url"
# Set by a primary handing over (manual promotion): "<deadline>|<candidate>".
HANDING_OVER = "failover_handing_over"
HANDOVER_SECONDS = 60

# Event kinds kept in cluster_events.
SUSPECT, VOTE, PROMOTE, FOLLOW, STEP_DOWN, FENCE, UNFENCE, HAND_OVER = (
    "suspect", "vote", "promote", "follow", "step_down", "fence", "unfence", "hand_over")


class FailoverRefused(Exception):
    """A manual promotion or demotion that the cluster's rules forbid."""


@dataclass(frozen=True)
class PeerStatus:
    """What one member's ``/sync/api/status`` said (``reachable`` False: nothing)."""

    instance_id: str
    sync_url: str
    reachable: bool
    role: str | None = None
    epoch: int = -1
    primary_url: str | None = None

    @property
    def is_live_primary(self) -> bool:
        return self.reachable and self.role == ROLE_PRIMARY


# --- talking to peers -----------------------------------------------------------


def _settings():
    return current_app.config["SETTINGS"]


def probe_timeout() -> float:
    """Seconds a probe may take: short enough that a frozen primary is
    suspected on time, never longer than the probe interval."""
    settings = _settings()
    return float(max(0.5, min(2.0, settings.failover_check_interval * 0.66, settings.connection_timeout)))


def own_url() -> str:
    from app.services.sync.primary import public_sync_url

    return public_sync_url(_settings())


def peer_status(instance_id: str, sync_url: str, *, timeout: float | None = None) -> PeerStatus:
    """One member's status, or unreachable. Never raises."""
    try:
        response = requests.get(f"{sync_url}/sync/api/status", timeout=timeout or probe_timeout())
        body = response.json() if response.status_code == 200 else None
        if not isinstance(body, dict):
            return PeerStatus(instance_id, sync_url, False)
        return PeerStatus(str(body.get("instanceId") or instance_id), sync_url, True, role=str(body.get("role")),
                          epoch=int(body.get("epoch")), primary_url=body.get("primaryUrl") or None)
    except (requests.RequestException, ValueError, TypeError):
        return PeerStatus(instance_id, sync_url, False)


def _post(sync_url: str, path: str, body: dict, *, epoch: int, timeout: float | None = None) -> dict | None:
    """POST to a peer with the join secret; its JSON answer, or None."""
    secret = _settings().sync_shared_secret or ""
    try:
        response = requests.post(f"{sync_url}/sync/api{path}", json=body, timeout=timeout or probe_timeout() + 2,
                                 headers={SECRET_HEADER: secret, EPOCH_HEADER: str(epoch)})
        answer = response.json()
    except (requests.RequestException, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def members() -> list[MonitoringInstance]:
    """The membership as this instance holds it (the primary's copy on
    candidates; a dependent that never promotes may hold none)."""
    return list(db.session.execute(
        select(MonitoringInstance).order_by(MonitoringInstance.failover_order, MonitoringInstance.id)).scalars())


def majority(count: int) -> int:
    return count // 2 + 1


def own_failover_order() -> int:
    """This instance's failover order: the primary's membership record once
    there is one (an administrator may change it), else FAILOVER_ORDER."""
    row = db.session.get(MonitoringInstance, configuration.instance_id())
    return row.failover_order if row is not None else _settings().failover_order


def _others(state: ClusterState) -> list[MonitoringInstance]:
    return [m for m in members() if m.id != state.instance_id and m.sync_url]


def _statuses(peers: list[tuple[str, str]]) -> list[PeerStatus]:
    """Probe (id, sync url) pairs in parallel."""
    if not peers:
        return []
    app = current_app._get_current_object()

    def probe(peer):
        with app.app_context():
            return peer_status(*peer)

    with ThreadPoolExecutor(max_workers=min(16, len(peers))) as pool:
        return list(pool.map(probe, peers))


def _post_all(targets: list[tuple[str, str]], path: str, body: dict, *, epoch: int) -> dict[str, dict | None]:
    """POST one body to many peers in parallel: {instance id: answer}."""
    if not targets:
        return {}
    app = current_app._get_current_object()

    def send(target):
        with app.app_context():
            return target[0], _post(target[1], path, body, epoch=epoch)

    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return dict(pool.map(send, targets))


# --- the tick ------------------------------------------------------------------


def tick() -> dict:
    """One round of failover duty for this instance's role."""
    state = configuration.snapshot()
    if not state.is_clustered:
        return {"skipped": "standalone"}
    if state.is_dependent:
        return watch_primary(state)
    return watch_majority(state)


def watch_primary(state: ClusterState) -> dict:
    """A dependent: probe the primary; suspect it, find or elect its successor."""
    settings = _settings()
    seen = peer_status(state.primary_id or "", state.primary_url) if state.primary_url else None
    if seen is not None and seen.is_live_primary and seen.epoch >= state.epoch:
        if seen.epoch > state.epoch:
            follow(state, epoch=seen.epoch, primary_id=seen.instance_id, primary_url=seen.sync_url,
                   reason="the primary is at a newer epoch")
        was_failing = int(configuration.get_state(PRIMARY_FAILURES, "0")) > 0
        configuration.set_state(PRIMARY_SEEN_AT, utcnow().isoformat())
        _clear_suspicion()
        if was_failing:
            _sync_soon()  # back: deliver the outbox now, not after the sync's backoff
        return {"primary": "reachable"}
    if seen is not None and seen.reachable and seen.epoch > state.epoch and seen.primary_url:
        # Our primary stepped down and names its successor.
        if _follow_named(state, seen.primary_url, "the old primary names it"):
            return {"followed": seen.primary_url}
    failures = int(configuration.get_state(PRIMARY_FAILURES, "0")) + 1
    configuration.set_state(PRIMARY_FAILURES, str(failures))
    db.session.commit()
    if failures < settings.failover_max_failures:
        return {"primary": "unreachable", "failures": failures}
    if not configuration.get_state(SUSPECTED_SINCE):
        configuration.set_state(SUSPECTED_SINCE, utcnow().isoformat())
        configuration.record_event(SUSPECT, state.epoch, subject_id=state.primary_id,
                                   detail=f"{failures} probes of {state.primary_url} failed in a row")
        db.session.commit()
        logger.warning("cluster: suspecting the primary at %s (epoch %d): %d probes failed in a row",
                       state.primary_url, state.epoch, failures)
    return elect(state)


def _clear_suspicion() -> None:
    configuration.set_state(PRIMARY_FAILURES, "0")
    configuration.set_state(SUSPECTED_SINCE, None)
    db.session.commit()


def _follow_named(state: ClusterState, url: str, why: str) -> bool:
    """Follow the instance at ``url`` if it is a live primary at a newer epoch."""
    seen = peer_status("", url)
    if seen.is_live_primary and seen.epoch > state.epoch:
        return follow(state, epoch=seen.epoch, primary_id=seen.instance_id, primary_url=url, reason=why)
    return False


def _newer_primary(state: ClusterState, statuses: list[PeerStatus]) -> bool:
    """Follow a newer primary that ``statuses`` show or name; True if done."""
    newest = sorted((s for s in statuses if s.reachable and s.epoch > state.epoch), key=lambda s: -s.epoch)
    for status in newest:
        if status.role == ROLE_PRIMARY:
            return follow(state, epoch=status.epoch, primary_id=status.instance_id, primary_url=status.sync_url,
                          reason=f"{status.instance_id} is the primary at epoch {status.epoch}")
        if status.primary_url and _follow_named(state, status.primary_url, f"{status.instance_id} names it"):
            return True
    return False


def elect(state: ClusterState) -> dict:
    """Look for a newer primary; else, as the first live candidate, run for
    epoch + 1 and promote on a majority of the membership's votes."""
    others = _others(state)
    hints = [(m.id, m.sync_url) for m in others]
    voted_url = configuration.get_state(VOTED_URL)
    if voted_url and voted_url not in {url for _, url in hints}:
        hints.append(("", voted_url))
    statuses = _statuses(hints)
    if _newer_primary(state, statuses):
        return {"followed": configuration.primary_url()}
    if any(s.is_live_primary and s.epoch >= state.epoch for s in statuses):
        # Our primary answers others: a glitch between it and us alone.
        return {"primary": "alive elsewhere"}
    order = own_failover_order()
    if order <= 0:
        return {"suspecting": state.primary_url, "candidate": False}
    reachable = {s.instance_id for s in statuses if s.reachable}
    earlier = [m for m in others if m.id != state.primary_id and 0 < m.failover_order
               and (m.failover_order, m.id) < (order, state.instance_id) and m.id in reachable]
    if earlier:
        return {"suspecting": state.primary_url, "waiting_for": earlier[0].id}
    return run_for_election(state, others)


def run_for_election(state: ClusterState, others: list[MonitoringInstance], *, reason: str = "") -> dict:
    """Ask every member for its vote; promote on a majority."""
    target = max(state.epoch + 1, int(configuration.get_state(NEXT_EPOCH, "0")))
    size = len(members()) or len(others) + 1
    if not any(m.id == state.instance_id for m in members()):
        size += 1
    if not configuration.grant_vote(target, state.instance_id, detail="its own candidacy"):
        return {"election": target, "outcome": "already voted for another candidate"}
    body = {"candidateId": state.instance_id, "epoch": target, "syncUrl": own_url()}
    answers = _post_all([(m.id, m.sync_url) for m in others], "/vote", body, epoch=state.epoch)
    granted = 1 + sum(1 for answer in answers.values() if answer and answer.get("granted") is True)
    newest_vote = max([int(a.get("votedEpoch") or 0) for a in answers.values() if a] + [0])
    logger.warning("cluster: election for epoch %d: %d of %d votes (a majority is %d)", target, granted, size,
                   majority(size))
    if granted >= majority(size):
        return {"election": target, "outcome": "won" if promote(state, target, reason=reason) else "lost the race"}
    if newest_vote >= target:
        configuration.set_state(NEXT_EPOCH, str(newest_vote + 1))
        db.session.commit()
    return {"election": target, "outcome": f"{granted} of {size} votes"}


def consider_vote(candidate_id: str, for_epoch: int, candidate_url: str) -> dict:
    """A candidate asks for this instance's vote for ``for_epoch``.

    Refused by a live primary, by an instance already at that epoch or
    past it, by one that still reaches its primary, and by one that voted
    for someone else in that epoch. Granted votes are persisted first.
    """
    state = configuration.snapshot()
    answer = {"epoch": state.epoch, "primaryUrl": state.primary_url if not state.is_primary else own_url()}
    if for_epoch <= state.epoch:
        return {**answer, "granted": False, "reason": f"epoch {for_epoch} is not newer than {state.epoch}"}
    if state.is_primary:
        return {**answer, "granted": False, "reason": "this instance is the primary, and alive"}
    if state.is_dependent and state.primary_url and state.primary_id != candidate_id:
        seen = peer_status(state.primary_id or "", state.primary_url)
        if seen.is_live_primary and seen.epoch >= state.epoch:
            return {**answer, "granted": False, "reason": f"the primary at {state.primary_url} still answers"}
    granted = configuration.grant_vote(for_epoch, candidate_id, detail=f"asked by {candidate_url}")
    voted_epoch, voted_for = configuration.vote_granted()
    if granted:
        configuration.set_state(VOTED_URL, candidate_url)
        db.session.commit()
        logger.warning("cluster: voted for %s (%s) for epoch %d", candidate_id, candidate_url, for_epoch)
    return {**answer, "granted": granted, "votedEpoch": voted_epoch, "votedFor": voted_for,
            **({} if granted else {"reason": f"voted for {voted_for} in epoch {voted_epoch}"})}


# --- transitions ------------------------------------------------------------------


def promote(state: ClusterState, new_epoch: int, *, reason: str = "") -> bool:
    """Become the primary at ``new_epoch`` (compare-and-set on ``state``)."""
    me = own_url()
    if not configuration.transition(state, new_role=ROLE_PRIMARY, new_epoch=new_epoch,
                                    primary_id=state.instance_id, primary_url=me, kind=PROMOTE,
                                    detail=reason or f"elected for epoch {new_epoch}"):
        return False
    configuration.set_state(PRIMARY_FAILURES, None)
    configuration.set_state(SUSPECTED_SINCE, None)
    configuration.set_state(NEXT_EPOCH, None)
    configuration.set_state(MAJORITY_SEEN_AT, utcnow().isoformat())
    # Own results waiting for the old primary are home now.
    db.session.execute(update(ResponseTime).where(ResponseTime.synced_at.is_(None))
                       .values(synced_at=utcnow()))
    _advance_sequences()
    old_primary = state.primary_id
    for member in members():
        if member.id == old_primary and member.id != state.instance_id:
            member.role, member.status = ROLE_DEPENDENT, "inactive"
    db.session.commit()
    from app.services.sync import primary

    primary.register_self()
    _adopt_open_deliveries()
    name = _settings().instance_name
    _notify(f"primary is now {name} ({_settings().instance_location}), epoch {new_epoch}",
            reason or f"{name} was elected after the primary at {state.primary_url} stopped answering.")
    logger.warning("cluster: this instance is now the primary at epoch %d", new_epoch)
    announce(new_epoch)
    return True


def announce(new_epoch: int) -> None:
    """Tell every member whom to follow (they would find out, this is sooner)."""
    state = configuration.snapshot()
    body = {"primaryId": state.instance_id, "epoch": new_epoch, "syncUrl": own_url()}
    _post_all([(m.id, m.sync_url) for m in _others(state)], "/announce", body, epoch=new_epoch)


def follow(state: ClusterState, *, epoch: int, primary_id: str | None, primary_url: str, reason: str) -> bool:
    """Follow the primary at ``primary_url`` from ``epoch`` on: a primary
    steps down, a dependent re-registers there and catches it up."""
    if epoch < state.epoch or (epoch == state.epoch and state.is_dependent and primary_url == state.primary_url):
        return False
    if primary_id == state.instance_id:
        return False
    kind = FOLLOW if state.is_dependent else STEP_DOWN
    if not configuration.transition(state, new_role=ROLE_DEPENDENT, new_epoch=epoch, primary_id=primary_id,
                                    primary_url=primary_url, kind=kind, detail=reason):
        return False
    from app.services.sync import dependent

    # Register with the new primary in the next round (the old token is
    # kept: it is no use there, but proves nothing wrong either).
    configuration.set_state(dependent.TOKEN_REFUSED_AT, utcnow().isoformat())
    configuration.set_state(dependent.FAILURES, "0")
    configuration.set_state(PRIMARY_FAILURES, None)
    configuration.set_state(SUSPECTED_SINCE, None)
    configuration.set_state(NEXT_EPOCH, None)
    configuration.set_state(HANDING_OVER, None)
    db.session.commit()
    logger.warning("cluster: %s the primary at %s (epoch %d): %s",
                   "following" if kind == FOLLOW else "stepped down; following", primary_url, epoch, reason)
    _sync_soon()
    return True


def watch_majority(state: ClusterState) -> dict:
    """A primary (or a fenced one): step down for a newer epoch, fence
    without a majority, unfence when it is back."""
    others = _others(state)
    statuses = _statuses([(m.id, m.sync_url) for m in others])
    if _newer_primary(state, statuses):
        return {"stepped_down": configuration.primary_url()}
    size = len(members()) or 1
    reachable = 1 + sum(1 for s in statuses if s.reachable)
    now = utcnow()
    handing_over = _handover_pending(now)
    if reachable >= majority(size):
        configuration.set_state(MAJORITY_SEEN_AT, now.isoformat())
        db.session.commit()
        # A newer epoch whose primary is out of reach: stay fenced and let
        # the members elect again (this instance grants its vote).
        newer = any(s.reachable and s.epoch > state.epoch for s in statuses)
        if state.is_fenced and not handing_over and not newer:
            configuration.transition(state, new_role=ROLE_PRIMARY, new_epoch=state.epoch,
                                     primary_id=state.instance_id, primary_url=own_url(), kind=UNFENCE,
                                     detail=f"{reachable} of {size} members in reach again")
        return {"members": size, "reachable": reachable}
    seen_at = configuration.get_state(MAJORITY_SEEN_AT)
    if seen_at is None:
        configuration.set_state(MAJORITY_SEEN_AT, now.isoformat())
        db.session.commit()
        return {"members": size, "reachable": reachable}
    alone_for = (now - datetime.fromisoformat(seen_at)).total_seconds()
    # Fencing matters only where the others could elect someone: three
    # members or more, one of them a candidate.
    could_elect = size >= 3 and any(m.failover_order > 0 for m in others)
    if state.is_primary and could_elect and alone_for > _settings().failover_delay:
        configuration.transition(state, new_role=ROLE_FENCED, new_epoch=state.epoch, primary_id=state.instance_id,
                                 primary_url=own_url(), kind=FENCE,
                                 detail=f"only {reachable} of {size} members in reach for {alone_for:.0f} s")
    return {"members": size, "reachable": reachable, "alone_for": alone_for}


def fence_for_newer_epoch(sender_epoch: int) -> None:
    """A request carried a newer epoch than ours: stop acting as the primary
    now; the next tick finds the new primary and follows it."""
    state = configuration.snapshot()
    if state.is_primary and sender_epoch > state.epoch:
        configuration.transition(state, new_role=ROLE_FENCED, new_epoch=state.epoch, primary_id=state.instance_id,
                                 primary_url=own_url(), kind=FENCE,
                                 detail=f"a peer spoke at epoch {sender_epoch}, newer than ours")


def follow_if_primary(url: str, *, reason: str) -> bool:
    """Follow the instance at ``url`` if its status shows it is a live
    primary at a newer epoch than ours (a sync reply named it)."""
    return _follow_named(configuration.snapshot(), url, reason)


def heard_announcement(primary_id: str, epoch: int, url: str) -> bool:
    """A member says it is the primary from ``epoch`` on: follow it once its
    own status confirms that."""
    state = configuration.snapshot()
    if epoch <= state.epoch and not (state.is_fenced and epoch == state.epoch):
        return False
    return _follow_named(state, url, f"{primary_id} announced itself")


def rejoin_at_start() -> str | None:
    """At start, a primary (or a fenced one) asks its peers first: when one
    of them holds a newer epoch, it joins as a dependent before serving
    anything. Returns whom it follows, or None."""
    state = configuration.snapshot()
    if not (state.is_primary or state.is_fenced):
        return None
    # A fresh grace period: fencing counts from this start, not the last run.
    configuration.set_state(MAJORITY_SEEN_AT, utcnow().isoformat())
    db.session.commit()
    statuses = _statuses([(m.id, m.sync_url) for m in _others(state)])
    if _newer_primary(state, statuses):
        return configuration.primary_url()
    return None


# --- manual control ---------------------------------------------------------------


def promote_here() -> dict:
    """Manual promotion of this instance: the primary hands over (it fences
    itself and grants its vote), then this instance runs for the next epoch."""
    state = configuration.snapshot()
    if state.is_primary:
        raise FailoverRefused("this instance is already the primary")
    if not state.is_dependent:
        raise FailoverRefused(f"this instance is {state.role}, not a dependent; only a dependent can be promoted")
    if state.primary_url:
        answer = _post(state.primary_url, "/handover", {"candidateId": state.instance_id}, epoch=state.epoch)
        if answer is not None and answer.get("handedOver") is not True:
            raise FailoverRefused(f"the primary refused to hand over: {answer.get('message') or answer}")
    outcome = run_for_election(configuration.snapshot(), _others(state), reason="promoted by an administrator")
    if outcome.get("outcome") != "won":
        raise FailoverRefused(f"the election for epoch {outcome.get('election')} was not won: {outcome.get('outcome')}")
    return {"epoch": configuration.epoch(), "primaryId": state.instance_id}


def hand_over(candidate_id: str) -> dict:
    """The primary's side of a manual promotion: stop accepting (fenced),
    vote for the candidate, and let it win the next epoch."""
    state = configuration.snapshot()
    if not state.is_primary:
        raise FailoverRefused("this instance is not the primary")
    candidate = db.session.get(MonitoringInstance, candidate_id)
    if candidate is None or candidate_id == state.instance_id:
        raise FailoverRefused(f"{candidate_id} is not a member of this cluster")
    if candidate.failover_order <= 0:
        raise FailoverRefused(f"{candidate.name} has failover order 0 and never becomes the primary")
    deadline = utcnow() + timedelta(seconds=HANDOVER_SECONDS)
    configuration.set_state(HANDING_OVER, f"{deadline.isoformat()}|{candidate_id}")
    db.session.commit()
    if not configuration.transition(state, new_role=ROLE_FENCED, new_epoch=state.epoch,
                                    primary_id=state.instance_id, primary_url=own_url(), kind=HAND_OVER,
                                    detail=f"handing over to {candidate.name} ({candidate_id})"):
        raise FailoverRefused("the cluster state changed meanwhile; try again")
    configuration.grant_vote(state.epoch + 1, candidate_id, detail="handing over")
    return {"handedOver": True, "epoch": state.epoch, "candidateId": candidate_id}


def demote_here(successor_id: str | None = None) -> dict:
    """Manual demotion of this primary: hand over to ``successor_id`` (a
    promotion chosen on the primary), or else to the first candidate in
    failover order that is alive, and have it run for the next epoch."""
    state = configuration.snapshot()
    if not state.is_primary:
        raise FailoverRefused("this instance is not the primary")
    candidates = [m for m in _others(state) if m.failover_order > 0]
    if successor_id is not None:
        chosen = db.session.get(MonitoringInstance, successor_id)
        if chosen is not None and chosen.failover_order <= 0:
            raise FailoverRefused(f"{chosen.name} has failover order 0 and never becomes the primary")
        candidates = [m for m in candidates if m.id == successor_id]
        if not candidates:
            raise FailoverRefused(f"{successor_id} is not a member of this cluster that could take over")
    alive = {s.instance_id for s in _statuses([(m.id, m.sync_url) for m in candidates]) if s.reachable}
    successor = next((m for m in candidates if m.id in alive), None)
    if successor is None:
        raise FailoverRefused(f"{candidates[0].name} is not in reach to take over" if successor_id else
                              "no candidate (failover order above 0) is in reach to take over")
    hand_over(successor.id)
    answer = _post(successor.sync_url, "/elect", {"candidateId": successor.id}, epoch=state.epoch,
                   timeout=probe_timeout() + 10)
    if not answer or answer.get("elected") is not True:
        raise FailoverRefused(f"{successor.name} did not win the election: {answer}")
    return {"epoch": answer.get("epoch"), "primaryId": successor.id}


def run_now_after_handover() -> dict:
    """The candidate's side of a demotion: the primary handed over; run."""
    state = configuration.snapshot()
    if not state.is_dependent or own_failover_order() <= 0:
        raise FailoverRefused("this instance is not a candidate")
    outcome = run_for_election(state, _others(state), reason="the primary handed over")
    return {"elected": outcome.get("outcome") == "won", "epoch": configuration.epoch(), **outcome}


def set_failover_order(instance_id: str, order: int) -> MonitoringInstance:
    """An administrator's change of a member's failover order (on the primary;
    carried to every member with the configuration)."""
    if not configuration.accepts_configuration():
        raise FailoverRefused("the failover order is changed on the primary")
    if not 0 <= order <= 10_000:
        raise ValueError("failoverOrder must be between 0 and 10000")
    member = db.session.get(MonitoringInstance, instance_id)
    if member is None:
        raise LookupError(f"no instance with id {instance_id}")
    member.failover_order = order
    db.session.commit()
    logger.info("failover order of %s (%s) is now %d", member.name, instance_id, order)
    return member


def _handover_pending(now: datetime) -> bool:
    value = configuration.get_state(HANDING_OVER)
    if not value:
        return False
    deadline = datetime.fromisoformat(value.split("|", 1)[0])
    if now <= deadline:
        return True
    configuration.set_state(HANDING_OVER, None)
    db.session.commit()
    return False


# --- after a promotion ---------------------------------------------------------------

# Tables whose ids a candidate copied from the primary.
_COPIED_ID_TABLES = ("endpoints", "notification_services", "users", "api_keys", "status_changes",
                     "notification_deliveries", "response_times", "aggregated_results", "cluster_events",
                     "maintenance_windows")


def _advance_sequences() -> None:
    """On PostgreSQL, move id sequences past the ids copied from the old primary."""
    if db.engine.dialect.name != "postgresql":
        return  # SQLite's AUTOINCREMENT follows the largest id inserted
    for table in _COPIED_ID_TABLES:
        db.session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), 1))"))


def _adopt_open_deliveries() -> None:
    from app.services.sync.replication import adopt_inherited_deliveries

    adopted = adopt_inherited_deliveries()
    if adopted:
        logger.warning("cluster: %d alerts the old primary had not sent yet go out from here", adopted)


def _notify(headline: str, detail: str) -> None:
    """A cluster notification to every enabled service marked default."""
    from app.services import alerts

    alerts.raise_cluster_alert(headline, detail)


def _sync_soon() -> None:
    """Run a sync round now instead of at the next heartbeat."""
    try:
        from app.services import queues
        from workers.jobs.sync import sync_with_primary

        queues.queue(queues.SYNC_QUEUE).enqueue(sync_with_primary, job_timeout=300, result_ttl=0,
                                                failure_ttl=3600)
    except Exception:  # Redis away: the clock's next heartbeat does it
        logger.debug("could not enqueue a sync round", exc_info=True)


def newest_held() -> dict[str, str]:
    """{instance id: newest checkedAt held here}, for every member."""
    held = {}
    for member in members():
        newest = db.session.execute(
            select(func.max(ResponseTime.checked_at)).where(ResponseTime.instance_id == member.id)).scalar()
        if newest is not None:
            held[member.id] = newest.isoformat()
    return held
