"""Where AWS calls go: a region, and each service's endpoint, from the values given and the
standard AWS variables; and the checks of a region name and an endpoint URL.

Plain Python, no pydantic: ``AwsSettings`` (``aws:`` of the worker configuration, built and
validated by pydantic) resolves its region and endpoints here, and so do the commands that
must start fast (``worker send`` builds its clients from its options without importing the
settings models, ``worker.cli.common.Connection``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.errors import ConfigError

SERVICES = ("sqs", "sns", "s3", "dynamodb", "cloudwatch")
"""The AWS services the worker and its commands call (``AWS_ENDPOINT_URL_<SERVICE>`` each)."""

# botocore's own rule (botocore.utils.validate_region_name): checked here so that a bad
# region is a configuration error at start, not a traceback from the first client.
_REGION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")


def shown(value: object, limit: int = 60) -> str:
    """A value for an error message: shortened, with any ``user:password@`` of a URL hidden."""
    text = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)?[^/@\s]*@", r"\1***@", str(value))
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def check_endpoint_url(value: str) -> str:
    """``value`` stripped if it is an absolute http(s) URL with a host; ValueError otherwise."""
    text = value.strip()
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or " " in text:
        hint = f"; write http://{text}" if text and "://" not in text and " " not in text else ""
        raise ValueError(f"{shown(text)} is not an absolute http(s) URL with a host{hint}")
    return text


def check_region(value: str) -> str:
    """``value`` stripped if it is a region name botocore accepts; ValueError otherwise."""
    text = value.strip()
    if not text:
        raise ValueError("empty; leave it unset to use AWS_REGION / AWS_DEFAULT_REGION")
    if not _REGION_NAME.match(text):
        raise ValueError(f"{shown(text)} is not a region name (e.g. eu-west-1)")
    return text


@dataclass(frozen=True)
class AwsTarget:
    """Where one client's calls go (what ``worker.aws.aws_client`` reads): the values as
    given (checked by whoever built it: ``AwsSettings``, or ``check_region`` and
    ``check_endpoint_url``), the variables read when asked.

    A service's endpoint, the most specific first: a setting for that service alone
    (``service_endpoints``), ``AWS_ENDPOINT_URL_<SERVICE>``, then ``endpoint_url`` (every
    service), then ``AWS_ENDPOINT_URL``, else AWS's own endpoint."""

    region: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    service_endpoints: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """service -> (endpoint, the setting it came from): a setting for one service alone."""

    def resolved_region(self) -> str | None:
        return (
            self.region
            or os.environ.get("AWS_REGION", "").strip()
            or os.environ.get("AWS_DEFAULT_REGION", "").strip()
            or None
        )

    def endpoint_and_source(
        self, service: str = "sqs", general: str = "aws.endpoint_url"
    ) -> tuple[str | None, str]:
        """``service``'s endpoint (None: AWS's own) and what set it: a setting for that
        service, ``AWS_ENDPOINT_URL_<SERVICE>``, ``general`` (what ``endpoint_url`` is called
        where it came from: ``aws.endpoint_url``, ``--endpoint-url``), ``AWS_ENDPOINT_URL``."""
        if service in self.service_endpoints:
            return self.service_endpoints[service]
        name = f"AWS_ENDPOINT_URL_{service.upper()}"
        for value, source in (
            (os.environ.get(name, "").strip(), name),
            (self.endpoint_url, general),
            (os.environ.get("AWS_ENDPOINT_URL", "").strip(), "AWS_ENDPOINT_URL"),
        ):
            if value:
                return value, source
        return None, "AWS"

    def resolved_endpoint(self, service: str = "sqs") -> str | None:
        """``service``'s endpoint, the most specific first (see the class); None: AWS's own."""
        return self.endpoint_and_source(service)[0]

    def check(self, services: Iterable[str] = SERVICES) -> None:
        """Validate the standard AWS variables this target uses: an
        ``AWS_ENDPOINT_URL_<SERVICE>`` (always used when set) and ``AWS_ENDPOINT_URL``
        (without ``endpoint_url``) must be an absolute http(s) URL, ``AWS_REGION`` /
        ``AWS_DEFAULT_REGION`` a region name. ConfigError, one line, naming the variable."""
        fallbacks: list[tuple[str, str]] = [
            (f"AWS_ENDPOINT_URL_{s.upper()}", "endpoint_url")
            for s in dict.fromkeys(services)
            if s not in self.service_endpoints
        ]
        if self.endpoint_url is None:
            fallbacks.append(("AWS_ENDPOINT_URL", "endpoint_url"))
        if self.region is None:
            # The first one set is the one used; an empty one counts as unset.
            used = next(
                (n for n in ("AWS_REGION", "AWS_DEFAULT_REGION") if os.environ.get(n, "").strip()), None
            )
            fallbacks += [(used, "region")] if used else []
        for name, field_name in fallbacks:
            value = os.environ.get(name, "")
            if not value.strip():
                continue
            try:
                (check_endpoint_url if field_name == "endpoint_url" else check_region)(value)
            except ValueError as exc:
                raise ConfigError(f"invalid configuration ({name}): aws.{field_name}: {exc}") from None
