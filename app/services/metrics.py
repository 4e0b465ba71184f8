"""Prometheus metrics, read from the database and Redis at each scrape.

Nothing is counted in the process: gunicorn runs several web workers, and
counters kept in each would differ by which one answered. Every value is
read from the shared state when Prometheus asks, by ``MonitorCollector``, in
a fixed number of queries whatever the number of endpoints, locations or
instances (three reads of this instance's state and eight others; in
Redis a ping, three queue lengths, the lease and the worker set).

Windows: results are counted over the last ``WINDOW`` (gauges: raw results
are pruned after their retention, so a counter read back from them would go down),
through the (endpoint_id, checked_at) index, so a scrape reads only that
window's rows. Notification deliveries are counted as they are now stored
(finished ones are pruned after a while), by status and event.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    STATUS_DOWN, STATUS_PARTIAL, STATUS_PENDING, STATUS_UP, ClusterEvent, Endpoint, LocationStatus, MonitoringInstance,
    NotificationDelivery, ProbeState, ResponseTime, utcnow,
)
from app.services import configuration, queues, readiness

logger = logging.getLogger(__name__)

WINDOW = timedelta(minutes=5)
CONSENSUS_STATUSES = (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN, STATUS_PENDING)
INSTANCE_STATUSES = ("active", "inactive", "failed")
LAG_QUANTILES = (0.5, 0.99, 1.0)

ENDPOINT_LABELS = ["endpoint_id", "endpoint"]
LOCATION_LABELS = ["instance_id", "location"]


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


def quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank quantile of values sorted ascending (not empty)."""
    rank = min(max(1, math.ceil(q * len(sorted_values))), len(sorted_values))
    return sorted_values[rank - 1]


class MonitorCollector:
    """Builds every metric family from the database and Redis when collected.

    Needs an app context (the request's). ``collect`` runs the queries; a
    failing Redis only leaves out the Redis-backed families and reports
    ``monitor_redis_up 0``. ``version`` is the running code's, for
    ``monitor_info``.
    """

    def __init__(self, version: str):
        self.version = version

    def collect(self):
        now = utcnow()
        own_id, own_location = configuration.instance_identity()
        role = configuration.role()
        epoch = configuration.epoch()

        info = _gauge("monitor_info", "This instance: id, location, role and version (always 1).",
                      ["instance_id", "location", "role", "version"])
        info.add_metric([own_id, own_location, role, self.version], 1)
        yield info
        cluster_epoch = _gauge("monitor_cluster_epoch",
                               "The cluster's epoch as this instance knows it; it grows by one at every failover.")
        cluster_epoch.add_metric([], epoch)
        yield cluster_epoch
        transitions = CounterMetricFamily(
            "monitor_cluster_transitions", "Cluster transitions this instance went through or took part in "
            "(suspect, vote, promote, follow, step_down, fence, unfence, hand_over).", labels=["kind"])
        for kind, count in db.session.execute(
                select(ClusterEvent.kind, func.count()).group_by(ClusterEvent.kind).order_by(ClusterEvent.kind)):
            transitions.add_metric([kind], count)
        yield transitions

        endpoints = db.session.execute(
            select(Endpoint.id, Endpoint.name, Endpoint.status, Endpoint.is_paused, Endpoint.locations_voting,
                   Endpoint.locations_up, Endpoint.locations_down)
        ).all()
        yield from self._endpoint_families(endpoints)
        names = {row.id: row.name for row in endpoints}
        yield from self._location_status_families(names)

        instances = db.session.execute(
            select(MonitoringInstance.id, MonitoringInstance.name, MonitoringInstance.location,
                   MonitoringInstance.status, MonitoringInstance.last_heartbeat_at)
        ).all()
        yield from self._instance_families(instances, now)
        locations = {row.id: row.location for row in instances}
        locations[own_id] = own_location
        yield from self._probe_families(locations)

        yield from self._window_families(now, own_id)
        outbox = _gauge("monitor_outbox_results",
                        "Results held here not yet acknowledged by the primary (only a dependent has any; "
                        "after a failover, also results queued again to catch the new primary up).")
        outbox.add_metric([], db.session.execute(
            select(func.count()).select_from(ResponseTime).where(ResponseTime.synced_at.is_(None))
        ).scalar_one())
        yield outbox
        yield from self._delivery_families()
        db.session.commit()  # end the read transaction; nothing was written
        yield from self._redis_families()

    def _endpoint_families(self, endpoints):
        status = _gauge("monitor_endpoint_status",
                        "Consensus status of each endpoint: 1 for the current status, 0 for the others.",
                        ENDPOINT_LABELS + ["status"])
        paused = _gauge("monitor_endpoint_paused", "1 while the endpoint is paused.", ENDPOINT_LABELS)
        voting = _gauge("monitor_endpoint_locations_voting", "Locations whose view counted in the last vote.",
                        ENDPOINT_LABELS)
        up = _gauge("monitor_endpoint_locations_up", "Voting locations that see the endpoint UP.", ENDPOINT_LABELS)
        down = _gauge("monitor_endpoint_locations_down", "Voting locations that see the endpoint DOWN.",
                      ENDPOINT_LABELS)
        for row in endpoints:
            labels = [str(row.id), row.name]
            for name in CONSENSUS_STATUSES:
                status.add_metric(labels + [name], 1 if row.status == name else 0)
            paused.add_metric(labels, 1 if row.is_paused else 0)
            voting.add_metric(labels, row.locations_voting)
            up.add_metric(labels, row.locations_up)
            down.add_metric(labels, row.locations_down)
        yield from (status, paused, voting, up, down)

    def _location_status_families(self, names):
        labels = ENDPOINT_LABELS + LOCATION_LABELS
        response = _gauge("monitor_endpoint_last_response_time_seconds",
                          "Response time of the newest result from each location.", labels)
        checked = _gauge("monitor_endpoint_last_check_timestamp_seconds",
                         "When the newest result from each location was checked (unix time).", labels)
        last_ok = _gauge("monitor_endpoint_last_check_ok", "1 if the newest result from each location passed.",
                         labels)
        rows = db.session.execute(
            select(LocationStatus.endpoint_id, LocationStatus.instance_id, LocationStatus.location,
                   LocationStatus.last_checked_at, LocationStatus.last_is_ok, LocationStatus.last_response_time_ms)
        ).all()
        for row in rows:
            if row.endpoint_id not in names:
                continue  # deleted between the two reads
            values = [str(row.endpoint_id), names[row.endpoint_id], row.instance_id, row.location]
            if row.last_response_time_ms is not None:
                response.add_metric(values, row.last_response_time_ms / 1000.0)
            if row.last_checked_at is not None:
                checked.add_metric(values, row.last_checked_at.timestamp())
            if row.last_is_ok is not None:
                last_ok.add_metric(values, 1 if row.last_is_ok else 0)
        yield from (response, checked, last_ok)

    def _instance_families(self, instances, now):
        labels = ["instance_id", "name", "location"]
        lag = _gauge("monitor_instance_heartbeat_age_seconds",
                     "Seconds since each registered instance's last heartbeat (the instance registry).", labels)
        status = _gauge("monitor_instance_status",
                        "Each registered instance's status: 1 for the current one, 0 for the others.",
                        labels + ["status"])
        for row in instances:
            values = [row.id, row.name, row.location]
            if row.last_heartbeat_at is not None:
                lag.add_metric(values, max(0.0, (now - row.last_heartbeat_at).total_seconds()))
            for name in INSTANCE_STATUSES:
                status.add_metric(values + [name], 1 if row.status == name else 0)
        yield from (lag, status)

    def _probe_families(self, locations):
        offline = _gauge("monitor_location_probe_offline",
                         "1 while a location is probe-offline (left out of every vote).", LOCATION_LABELS)
        for row in db.session.execute(select(ProbeState.instance_id, ProbeState.offline_since)).all():
            offline.add_metric([row.instance_id, locations.get(row.instance_id, "")],
                               1 if row.offline_since is not None else 0)
        yield offline

    def _window_families(self, now, own_id):
        since = now - WINDOW
        # Through the (endpoint_id, checked_at) index: only the window's rows are read.
        in_window = (ResponseTime.endpoint_id.in_(select(Endpoint.id)), ResponseTime.checked_at >= since)
        minutes = int(WINDOW.total_seconds() // 60)
        run = _gauge(f"monitor_checks_run_{minutes}m",
                     f"Results checked in the last {minutes} minutes, by location.", LOCATION_LABELS)
        failed = _gauge(f"monitor_checks_failed_{minutes}m",
                        f"Failed results checked in the last {minutes} minutes, by location.", LOCATION_LABELS)
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for row in db.session.execute(
            select(ResponseTime.instance_id, ResponseTime.location, ResponseTime.is_ok, func.count())
            .where(*in_window).group_by(ResponseTime.instance_id, ResponseTime.location, ResponseTime.is_ok)
        ).all():
            tally = counts[(row.instance_id, row.location)]
            tally[0] += row[3]
            if not row.is_ok:
                tally[1] += row[3]
        for (instance_id, location), (total, failures) in sorted(counts.items()):
            run.add_metric([instance_id, location], total)
            failed.add_metric([instance_id, location], failures)
        yield from (run, failed)

        lags = sorted(value for value in db.session.execute(
            select(ResponseTime.check_metadata["scheduleLagMs"].as_float())
            .where(*in_window, ResponseTime.instance_id == own_id)
        ).scalars() if value is not None)
        lag = _gauge("monitor_schedule_lag_seconds",
                     f"Delay from due time to start of this instance's checks in the last {minutes} minutes "
                     "(quantile 1 is the largest).", ["quantile"])
        for q in LAG_QUANTILES if lags else ():
            lag.add_metric([f"{q:g}"], quantile(lags, q) / 1000.0)
        samples = _gauge("monitor_schedule_lag_samples",
                         f"Results of this instance's in the last {minutes} minutes that carry a schedule lag.")
        samples.add_metric([], len(lags))
        yield from (lag, samples)

    def _delivery_families(self):
        deliveries = _gauge("monitor_notification_deliveries",
                            "Notification deliveries stored, by status (pending, sending, sent, failed) and event; "
                            "finished ones are pruned after a while.", ["status", "event"])
        for row in db.session.execute(
            select(NotificationDelivery.status, NotificationDelivery.event, func.count())
            .group_by(NotificationDelivery.status, NotificationDelivery.event)
        ).all():
            deliveries.add_metric([row.status, row.event], row[2])
        yield deliveries

    def _redis_families(self):
        from rq import Queue

        from workers.clock import LEASE_KEY

        up = _gauge("monitor_redis_up", "1 if Redis answered this scrape.")
        url = readiness.probe_redis_url()
        if url is None:
            up.add_metric([], 0)
            yield up
            return
        client = readiness.probe_redis(url)
        try:
            client.ping()
            depths = {name: Queue(name, connection=client).count for name in queues.ALL_QUEUES}
            leader = client.exists(LEASE_KEY)
            workers = readiness.live_workers(client)
        except Exception as exc:  # Redis is away: report that, and the rest still goes out
            logger.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = _gauge("monitor_queue_jobs", "Jobs waiting in each RQ queue.", ["queue"])
        for name, count in depths.items():
            depth.add_metric([name], count)
        yield depth
        lease = _gauge("monitor_clock_lease_held", "1 if some clock holds the scheduling lease.")
        lease.add_metric([], 1 if leader else 0)
        yield lease
        alive = _gauge("monitor_workers", "RQ workers alive on this instance's queues.")
        alive.add_metric([], workers)
        yield alive


def render(version: str) -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and their content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(version))
    return generate_latest(registry), CONTENT_TYPE_LATEST
