"""The data model; importing this package registers every table."""
from app.models.endpoint import (
    STATUS_PARTIAL,
    STATUS_DOWN,
    STATUS_PENDING,
    STATUS_UP,
    Endpoint,
    StatusChange,
    endpoint_notifications,
)
from app.models.instance import ClusterEvent, InstanceConfig, InstanceToken, MonitoringInstance
from app.models.location import LocationStatus, ProbeState
from app.models.maintenance import MaintenanceWindow
from app.models.notification import (
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    DELIVERY_SENT,
    NotificationDelivery,
    NotificationService,
)
from app.models.result import AggregatedResult, ResponseTime
from app.models.rollup import ResultLocationDay, ResultLocationHour
from app.models.login import LoginFailure
from app.models.settings import Setting
from app.models.types import UTCDateTime, utcnow
from app.models.user import API_KEY_PREFIX_LEN, ApiKey, User

__all__ = [
    "API_KEY_PREFIX_LEN", "DELIVERY_FAILED", "DELIVERY_PENDING", "DELIVERY_SENDING", "DELIVERY_SENT",
    "NotificationDelivery", "STATUS_DOWN", "STATUS_PENDING", "STATUS_UP", "AggregatedResult", "ApiKey", "Endpoint",
    "ClusterEvent", "InstanceConfig", "LocationStatus", "MaintenanceWindow", "ProbeState", "STATUS_PARTIAL", "InstanceToken", "MonitoringInstance",
    "NotificationService", "ResponseTime", "Setting", "StatusChange", "UTCDateTime", "User",
    "endpoint_notifications", "utcnow",
]
