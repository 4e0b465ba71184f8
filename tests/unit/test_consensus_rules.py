"""The consensus rules over sets of location states (pure functions)."""
from datetime import datetime, timedelta, timezone

import pytest

from app.services.consensus import (
    EVENT_DOWN,
    EVENT_PARTIAL,
    EVENT_UP,
    LocationView,
    Rule,
    alert_for,
    decide,
    freshness_window,
    probe_verdict,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def loc(name, status, *, fresh=True, offline=False, ok=None, reason=None, ms=10.0):
    return LocationView(instance_id=f"id-{name}", location=name, status=status, checked_at=NOW,
                        is_ok=(status == "UP") if ok is None else ok, response_time_ms=ms,
                        failure_reason=reason if reason is not None else (None if status == "UP" else "HTTP 502"),
                        fresh=fresh, probe_offline=offline)


def test_it_is_up_when_every_voter_is_up():
    result = decide([loc("a", "UP"), loc("b", "UP"), loc("c", "UP")], Rule())
    assert (result.status, result.voting, result.up, result.down) == ("UP", 3, 3, 0)
    assert result.reason is None


def test_it_is_down_when_a_majority_is_down():
    result = decide([loc("frankfurt", "DOWN"), loc("virginia", "DOWN", reason="timeout"), loc("singapore", "UP")],
                    Rule())
    assert result.status == "DOWN"
    assert result.reason == "DOWN from 2 of 3 locations: frankfurt (HTTP 502), virginia (timeout); singapore UP"


def test_exactly_half_down_is_partial_not_down():
    result = decide([loc("a", "DOWN"), loc("b", "DOWN"), loc("c", "UP"), loc("d", "UP")], Rule())
    assert result.status == "PARTIAL"


def test_one_of_three_down_is_partial():
    assert decide([loc("a", "DOWN"), loc("b", "UP"), loc("c", "UP")], Rule()).status == "PARTIAL"


def test_stale_locations_do_not_vote():
    result = decide([loc("a", "DOWN", fresh=False), loc("b", "DOWN", fresh=False), loc("c", "UP")], Rule())
    assert (result.status, result.voting) == ("UP", 1)


def test_probe_offline_locations_do_not_vote():
    result = decide([loc("a", "DOWN", offline=True), loc("b", "UP")], Rule())
    assert (result.status, result.voting) == ("UP", 1)


def test_at_least_n_holds_with_n_down():
    views = [loc("a", "DOWN"), loc("b", "UP"), loc("c", "UP")]
    assert decide(views, Rule.parse("atLeast:1")).status == "DOWN"  # any location
    assert decide(views, Rule.parse("atLeast:2")).status == "PARTIAL"
    views[1] = loc("b", "DOWN")
    assert decide(views, Rule.parse("atLeast:2")).status == "DOWN"


def test_at_least_n_is_capped_at_the_locations_that_check():
    # A standalone (one location) with atLeast:2 still goes DOWN: N cannot
    # exceed the locations that check the endpoint.
    assert decide([loc("here", "DOWN")], Rule.parse("atLeast:2"), checking=1).status == "DOWN"
    # With three checking and only one fresh, one DOWN is not two.
    assert decide([loc("a", "DOWN"), loc("b", "UP", fresh=False), loc("c", "UP", fresh=False)],
                  Rule.parse("atLeast:2")).status == "PARTIAL"


def test_no_voter_keeps_the_consensus_and_pending_before_the_first():
    assert decide([], Rule()).status == "PENDING"
    assert decide([loc("a", "DOWN", fresh=False)], Rule(), previous="DOWN").status == "DOWN"
    # A location still counting towards its threshold has no verdict yet.
    assert decide([loc("a", "PENDING", ok=False)], Rule()).status == "PENDING"


def test_a_cluster_of_one_says_just_its_reason():
    result = decide([loc("here", "DOWN", reason="connection refused")], Rule())
    assert (result.status, result.reason) == ("DOWN", "connection refused")


def test_response_times_are_over_the_voters():
    result = decide([loc("a", "UP", ms=10.0), loc("b", "UP", ms=30.0), loc("c", "UP", ms=500.0, fresh=False)],
                    Rule())
    assert (result.average_ms, result.min_ms, result.max_ms) == (20.0, 10.0, 30.0)


@pytest.mark.parametrize("text", ["", "most", "atLeast", "atLeast:0", "atLeast:101", "atLeast:x", "majority:2"])
def test_it_refuses_a_bad_rule(text):
    with pytest.raises(ValueError, match="majority"):
        Rule.parse(text)


def test_freshness_is_two_intervals_plus_heartbeat_timeout_and_grace():
    assert freshness_window(60, 10, 10) == timedelta(seconds=2 * 60 + 10 + 10 + 5)


def test_alerts_follow_the_incident_not_every_change():
    assert alert_for("DOWN", None, False) == (EVENT_DOWN, "DOWN")
    assert alert_for("PARTIAL", "DOWN", False) == (None, "DOWN")       # still the same incident
    assert alert_for("DOWN", "DOWN", False) == (None, "DOWN")          # DOWN -> PARTIAL -> DOWN pages once
    assert alert_for("UP", "DOWN", False) == (EVENT_UP, "UP")
    assert alert_for("UP", "UP", False) == (None, "UP")
    assert alert_for("PARTIAL", "UP", False) == (None, "UP")           # PARTIAL alerts are off by default
    assert alert_for("PARTIAL", "UP", True) == (EVENT_PARTIAL, "PARTIAL")
    assert alert_for("UP", "PARTIAL", True) == (EVENT_UP, "UP")
    assert alert_for("PENDING", "DOWN", False) == (None, "DOWN")


def test_a_probe_that_sees_everything_down_while_others_see_it_up_is_offline():
    mine = {1: False, 2: False, 3: False, 4: False, 5: True}
    reason = probe_verdict(mine, {1, 2, 3, 4}, offline=False, connectivity_failed=None)
    assert reason and "4 of its 5 endpoints DOWN" in reason
    # Everyone sees them DOWN: a real outage, not the probe.
    assert probe_verdict(mine, set(), offline=False, connectivity_failed=None) is None
    # Too few endpoints to tell a probe from a target.
    assert probe_verdict({1: False, 2: False}, {1, 2}, offline=False, connectivity_failed=None) is None


def test_a_probe_recovers_once_most_of_its_endpoints_pass():
    assert probe_verdict({1: False, 2: False, 3: True, 4: True}, set(), offline=True,
                         connectivity_failed=None) is not None  # half failing: not yet
    assert probe_verdict({1: False, 2: True, 3: True, 4: True}, set(), offline=True,
                         connectivity_failed=None) is None


def test_a_failing_connectivity_target_makes_a_probe_offline():
    assert probe_verdict({}, set(), offline=False, connectivity_failed="no route") == "no route"
