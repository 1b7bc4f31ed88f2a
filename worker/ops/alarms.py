"""CloudWatch alarms of the topology: what each alarm kind watches, its defaults, and the
concrete alarm (``AlarmDefinition``) provision puts.

A queue may declare ``depth``, ``oldest_message``, ``not_empty`` and ``sent_per_day``
alarms; a topic ``failed_deliveries`` and ``published_per_day``. Each is a number (the
threshold), ``true`` (the kind's defaults), ``false`` (off) or a mapping with ``above``,
``period``, ``periods`` and ``notify``. Unless ``alarms.defaults`` is false, every
dead-letter queue gets ``not_empty``, every queue with a DLQ ``oldest_message`` and every
topic ``failed_deliveries``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Namespace = Literal["AWS/SQS", "AWS/SNS"]
DAY = 86_400
WEEK = 7 * DAY


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Alarm(_Model):
    """One alarm of a queue or topic; unset fields take the kind's defaults."""

    above: float | None = Field(default=None, ge=0)
    """The alarm fires when the statistic is above this (the kind's unit: messages,
    seconds, deliveries)."""
    period: int | None = None
    """Seconds per datapoint: a multiple of 60 (SQS and SNS publish one-minute metrics;
    per-day kinds: 86400)."""
    periods: int | None = Field(default=None, ge=1, le=1440)
    """Consecutive datapoints above the threshold before the alarm fires."""
    notify: list[str] | None = None
    """Topics of the file (or SNS topic ARNs) told on ALARM and OK; default ``alarms.notify``."""

    @field_validator("period")
    @classmethod
    def _period(cls, value: int | None) -> int | None:
        if value is not None and (value < 60 or value % 60):
            raise ValueError(
                "period must be a multiple of 60 seconds (SQS and SNS report one-minute metrics)"
            )
        return value


AlarmField = Alarm | float | bool | None


def _coerce(value: Any) -> Any:
    """``true`` -> the defaults, a number -> the threshold, ``false``/null -> off."""
    if value is True:
        return Alarm()
    if value is False:
        return None
    if isinstance(value, int | float):
        return Alarm(above=float(value))
    return value


class _Alarms(_Model):
    """Alarm fields written as a number, ``true``/``false`` or a mapping."""

    @field_validator("*", mode="before")
    @classmethod
    def _coerce_all(cls, value: Any) -> Any:
        return _coerce(value)


class QueueAlarms(_Alarms):
    """A queue's alarms. Each is a number (the threshold), ``true`` (the kind's defaults),
    ``false`` (off) or a mapping (``above``, ``period``, ``periods``, ``notify``)."""

    depth: Alarm | None = None
    """Visible messages above N (``above`` needed) for ``periods`` minutes (default 5)."""
    oldest_message: Alarm | None = None
    """The oldest message older than N seconds for 5 minutes. Default for a queue with a
    DLQ: max(900, 2 x visibility_timeout x max_receive_count)."""
    not_empty: Alarm | None = None
    """Any visible message (threshold 0) for one minute: on by default for every DLQ."""
    sent_per_day: Alarm | None = None
    """Messages sent to the queue in a day above a budget (``above`` needed): usage."""


class TopicAlarms(_Alarms):
    """A topic's alarms, written as a queue's are."""

    failed_deliveries: Alarm | None = None
    """Deliveries SNS gave up on (NumberOfNotificationsFailed) above N (default 0) in 5
    minutes: on by default for every topic."""
    published_per_day: Alarm | None = None
    """Messages published in a day above a budget (``above`` needed): usage."""


class AlarmSettings(_Model):
    """The top-level ``alarms:`` block."""

    notify: list[str] = Field(default_factory=list)
    """Topics of the file (or SNS topic ARNs) every alarm tells, unless it names its own."""
    defaults: bool = True
    """Generate the default alarms (DLQ not empty, oldest message, SNS failed deliveries)."""
    ok_actions: bool = True
    """Also tell the topics when an alarm goes back to OK."""


@dataclass(frozen=True)
class Kind:
    namespace: Namespace
    metric: str
    statistic: str
    period: int
    periods: int
    unit: str
    text: str


KINDS: dict[str, Kind] = {
    "depth": Kind(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 60, 5, "messages", "visible messages"
    ),
    "oldest_message": Kind(
        "AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", 60, 5, "s", "age of the oldest message"
    ),
    "not_empty": Kind(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 60, 1, "messages", "messages in the DLQ"
    ),
    "sent_per_day": Kind("AWS/SQS", "NumberOfMessagesSent", "Sum", DAY, 1, "messages", "messages sent"),
    "failed_deliveries": Kind(
        "AWS/SNS", "NumberOfNotificationsFailed", "Sum", 300, 1, "deliveries", "failed deliveries"
    ),
    "published_per_day": Kind(
        "AWS/SNS", "NumberOfMessagesPublished", "Sum", DAY, 1, "messages", "messages published"
    ),
}
NEEDS_THRESHOLD = frozenset({"depth", "sent_per_day", "published_per_day"})
FIXED_ZERO = frozenset({"not_empty"})


@dataclass(frozen=True)
class AlarmDefinition:
    """One concrete alarm: the parameters of PutMetricAlarm (without actions' ARNs filled
    in: ``notify`` names topics of the file or ARNs)."""

    name: str
    kind: str
    resource: str
    region: str | None
    namespace: str
    metric: str
    statistic: str
    dimension: tuple[str, str]
    period: int
    periods: int
    threshold: float
    notify: tuple[str, ...]
    ok_actions: bool
    description: str

    def parameters(self, actions: list[str]) -> dict[str, Any]:
        """PutMetricAlarm's parameters with the notify topics as ARNs (``actions``)."""
        params: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Statistic": self.statistic,
            "Dimensions": [{"Name": self.dimension[0], "Value": self.dimension[1]}],
            "Period": self.period,
            "EvaluationPeriods": self.periods,
            "DatapointsToAlarm": self.periods,
            "Threshold": self.threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "ActionsEnabled": True,
            "AlarmActions": sorted(actions),
            "OKActions": sorted(actions) if self.ok_actions else [],
        }
        return params


def resolve(
    kind: str,
    spec: Alarm,
    *,
    name: str,
    resource: str,
    region: str | None,
    dimension: tuple[str, str],
    notify: list[str],
    ok_actions: bool,
    default_above: float | None = None,
) -> AlarmDefinition:
    """The concrete alarm of ``spec`` (a ValueError naming the field when a threshold is
    missing)."""
    k = KINDS[kind]
    above = 0.0 if kind in FIXED_ZERO and spec.above is None else spec.above
    if above is None:
        above = default_above
    if above is None:
        raise ValueError(f"needs `above` (the {k.text} that should raise the alarm)")
    period = spec.period or k.period
    periods = spec.periods or k.periods
    limit = WEEK if period >= 3600 else DAY
    if period * periods > limit:
        raise ValueError(
            f"period x periods is {period * periods} s; CloudWatch evaluates at most one day "
            "(a week with periods of an hour or more)"
        )
    window = f"{periods} x {period} s" if periods > 1 else f"{period} s"
    return AlarmDefinition(
        name=name,
        kind=kind,
        resource=resource,
        region=region,
        namespace=k.namespace,
        metric=k.metric,
        statistic=k.statistic,
        dimension=dimension,
        period=period,
        periods=periods,
        threshold=float(above),
        notify=tuple(spec.notify if spec.notify is not None else notify),
        ok_actions=ok_actions,
        description=(
            f"{resource}: {k.text} above {above:g} {k.unit} ({k.statistic.lower()} over {window}). "
            "Managed by worker provision."
        ),
    )


def alarm_view(params: dict[str, Any]) -> dict[str, str]:
    """What provision compares of an alarm, from PutMetricAlarm's parameters or from
    DescribeAlarms' answer alike: one string per attribute."""
    dims = sorted((d.get("Name"), d.get("Value")) for d in params.get("Dimensions") or [])
    return {
        "Metric": f"{params.get('Namespace')} {params.get('MetricName')} {params.get('Statistic')}",
        "Dimensions": ", ".join(f"{n}={v}" for n, v in dims),
        "Threshold": f"{params.get('ComparisonOperator')} {float(params.get('Threshold') or 0):g}",
        "Evaluation": (
            f"{params.get('DatapointsToAlarm') or params.get('EvaluationPeriods')} of "
            f"{params.get('EvaluationPeriods')} x {params.get('Period')} s, "
            f"missing data {params.get('TreatMissingData') or 'missing'}"
        ),
        "AlarmActions": json.dumps(sorted(params.get("AlarmActions") or [])),
        "OKActions": json.dumps(sorted(params.get("OKActions") or [])),
        "Description": str(params.get("AlarmDescription") or ""),
    }
