"""Kubernetes timestamps, parsed and written in one place.

The API server writes RFC 3339 in UTC with a `Z` (`2026-12-07T02:08:52Z`, sometimes with
fractions); Python before 3.11 could not read the `Z`, which is why three modules had each grown
their own `fromisoformat(stamp.replace("Z", "+00:00"))`. Every reader and writer uses these.
"""

from __future__ import annotations

import datetime as dt


def parse_time(stamp: str) -> dt.datetime:
    """An RFC 3339 timestamp as an aware datetime (a naive one is taken as UTC)."""
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def parse_optional(stamp: str | None) -> dt.datetime | None:
    """`parse_time`, or None for a missing or empty stamp."""
    return parse_time(stamp) if stamp else None


def iso(moment: dt.datetime) -> str:
    """A timestamp as Kubernetes writes them: UTC, whole seconds, `Z`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(stamp: str | None, now: dt.datetime) -> float | None:
    """Seconds from `stamp` to `now` (None without a stamp)."""
    then = parse_optional(stamp)
    return None if then is None else (now - then).total_seconds()
