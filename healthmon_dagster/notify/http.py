"""One HTTP POST for the webhook, PagerDuty and Teams channels (the standard library's client).

Errors never carry the URL (a webhook URL is a secret: Teams' carry a signature): ``where`` names
the channel and the variable that holds the URL.
"""

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from healthmon_dagster.notify.base import (
    NotConfigured,
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
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
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
