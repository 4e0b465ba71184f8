"""What every check returns, and the runner that never lets a check crash."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)


class CheckOptions(BaseModel):
    """Base of each check type's options model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class CheckFailed(Exception):
    """Raised inside a check to report a DOWN result with a clear reason,
    keeping whatever ``metadata`` the check gathered before it failed."""

    def __init__(self, reason: str, metadata: dict | None = None):
        super().__init__(reason)
        self.metadata = metadata or {}


@dataclass
class CheckResult:
    """The outcome of one check: the seed's ``MonitoringResult``."""

    is_ok: bool
    check_type: str
    response_time_ms: float | None = None
    failure_reason: str | None = None
    metadata: dict = field(default_factory=dict)
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    result_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def status(self) -> str:
        return "UP" if self.is_ok else "DOWN"

    def to_wire(self) -> dict:
        """The seed's camelCase ``MonitoringResult`` fields."""
        return {
            "resultId": self.result_id,
            "isOk": self.is_ok,
            "responseTime": self.response_time_ms,
            "status": self.status,
            "failureReason": self.failure_reason,
            "checkType": self.check_type,
            "metadata": self.metadata,
            "checkedAt": self.checked_at.isoformat(),
        }


@dataclass(frozen=True)
class CheckSpec:
    """Everything a check function may look at: plain, picklable data."""

    target: str
    port: int | None
    timeout: float
    options: CheckOptions
    # The location checking (INSTANCE_LOCATION), for checks that name it to
    # the target, such as the HTTP check's User-Agent.
    location: str | None = None


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` value)."""
    return round((time.perf_counter() - started) * 1000.0, 3)
