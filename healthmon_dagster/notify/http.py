"""One HTTP POST for the webhook, PagerDuty and Teams channels (the standard library's client).

Errors never carry the URL (a webhook URL is a secret: Teams' carry a signature): ``where`` names
the channel and the variable that holds the URL.

Redirects are never followed: urllib would turn a POST answered 301/302/303 into a GET (whose 200
would mark the notification sent with nothing delivered) and follow to any host or scheme. A 3xx
is a permanent error naming where it pointed (scheme and host only: a path or query may hold a
token): the channel's URL needs changing.
"""

import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from healthmon_dagster.notify.base import (
    NotConfigured,
    PermanentError,
    RetryableError,
    classify_http,
    receiver_url_problem,
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, where: str) -> Answer:
    """POST ``body``; the answer when it is 2xx, else the classified error (see
    :func:`~healthmon_dagster.notify.base.classify_http`); timeouts and connection failures are
    retryable (a timeout marked ``timed_out``: the receiver may have acted on the request). A URL
    other than http(s) is never opened (:class:`NotConfigured`)."""
    problem = receiver_url_problem(url)
    if problem:
        raise NotConfigured(f"the URL of {where} is unusable: {problem}")
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise PermanentError(
                f"{where} answered HTTP {exc.code}, redirected to "
                f"{_origin(exc.headers.get('Location'), url)}; a redirect is never followed "
                "(a POST would become a GET), set the URL it points to"
            ) from None
        reason = _short(exc.read()) if exc.fp is not None else ""
        raise classify_http(exc.code, where, exc.headers.get("Retry-After"), reason) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _timed_out(where, timeout) from None
        raise RetryableError(f"{where} is unreachable: {_reason(exc.reason)}; will retry") from None
    except TimeoutError:
        raise _timed_out(where, timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        raise RetryableError(f"{where} failed: {_reason(exc)}; will retry") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follows nothing: the 3xx reaches the caller as an :class:`urllib.error.HTTPError`."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _origin(location: str | None, base: str) -> str:
    """``scheme://host[:port]`` of a redirect's target (relative to ``base``), never its path or
    query (they may hold a token)."""
    if not location:
        return "nowhere (no Location header)"
    try:
        parts = urlsplit(urllib.parse.urljoin(base, location.strip()))
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unusable Location"
    if not parts.scheme or not host:
        return "an unusable Location"
    return f"{parts.scheme}://{host}{port}"


def _timed_out(where: str, timeout: float) -> RetryableError:
    return RetryableError(f"{where} did not answer within {timeout:g}s; will retry", timed_out=True)


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__ if not str(reason) else str(reason)


def _short(body: bytes, limit: int = 200) -> str:
    """The start of an error body, on one line (receivers explain 4xx answers there)."""
    text = body.decode("utf-8", errors="replace")
    return " ".join(text.split())[:limit]
