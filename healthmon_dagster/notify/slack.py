"""The ``slack`` channel: Block Kit messages through dagster-slack's ``SlackResource``.

A message is a header and one section per alert (details, labels, links to the Dagster UI), sent
with ``chat.postMessage``. It starts the thread of every alert it announces: the acknowledgement
and the resolve are posted as replies in that thread (``thread_ts``) and the original message is
rewritten with ``chat.update`` to show each alert's state now. Slack's limits are kept: at most 50
blocks (further alerts are counted in a last section with a link) and 3,000 characters a section
(cut with a link to the full view).

Errors: ``ok: false`` with a transient error (``ratelimited``, ``internal_error``, ...) and HTTP
429/5xx are retried, a 429's ``Retry-After`` honoured; anything else (``invalid_auth``,
``channel_not_found``, ``not_in_channel``, ...) fails the notification at once with Slack's code.

No duplicate after a timeout or a kill: Slack has no idempotency key, but every post carries the
notification's delivery key in its message metadata (``event_type`` ``healthmon_notification``,
``event_payload.delivery_key``). A message that went out before (``Message.in_doubt``: the client
gave up waiting, or its dispatcher died mid-send) is first looked for: ``conversations.history``
(a thread reply: ``conversations.replies``) with ``include_all_metadata``, from the first attempt
on (``oldest``), newest first, at most ``lookup_messages`` messages. Found, it counts as delivered
and its ``ts`` becomes the alert's thread; not found, it is posted. The lookup needs the channel's
id (a ``#name`` is resolved once with ``conversations.list``) and the ``channels:history`` scope
(``groups:history`` for a private channel); when Slack refuses it (a missing scope), the message
is posted again and the delivery's detail says so: a possible duplicate rather than a miss.

The same lookup serves a follow-up (resolve, acknowledgement, update) of alerts with no thread
here whose first message went out unrecorded (``Message.announced_key``: its post timed out, and
so did every retry, until it failed for good): found, the follow-up replies in its thread and
rewrites it, and the thread is recorded for every alert that message announced even when the
reply fails, so neither a retry nor the next alert's follow-up looks again; not found, the
follow-up is posted at the top level and names the alert (its id and fingerprint). One lookup
carries both keys when the follow-up is itself a resend in doubt.

Configuration: ``channel`` (``#name`` or an id, better an id; required), ``token_env`` (default
``SLACK_BOT_TOKEN``), ``base_url`` (Slack's Web API; tests point it at a local server),
``lookup_messages`` (default 200; 0 turns the lookup off).
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from healthmon_dagster.enums import AlertStatus, ChannelType, NotificationKind
from healthmon_dagster.notify.base import (
    FOLLOW_UP_KINDS,
    AlertView,
    ChannelConfig,
    Delivery,
    DeliveryError,
    Message,
    NotConfigured,
    PermanentError,
    RetryableError,
    ThreadRef,
    env_value,
    rate_limit_wait,
    receiver_url_problem,
)
from healthmon_dagster.notify.templates import render

if TYPE_CHECKING:
    from dagster_slack import SlackResource
    from slack_sdk import WebClient

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_TEXT = 3000  # the notification's fallback text (Slack truncates past 40,000)
RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)


EVENT_TYPE = "healthmon_notification"  # the metadata event_type of every post
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
LOOKUP_PAGE = 200  # messages a lookup asks for at once (Slack's advice: at most 200)
# Seconds the lookup starts before the first attempt could have been made: the clocks of this
# host and Slack's may differ.
LOOKUP_SKEW = 60.0
MAX_LIST_PAGES = 10  # conversations.list pages read to find a #name's id


class SlackConfig(ChannelConfig):
    channel: str | None = Field(default=None, min_length=1)
    token_env: str = Field(default="SLACK_BOT_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$")
    base_url: str | None = None
    # Messages read (newest first, from the first attempt on) when looking for the copy of a
    # message whose post timed out; 0: never look (a timeout may then show twice).
    lookup_messages: int = Field(default=200, ge=0, le=5000)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        problem = receiver_url_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


def _cut(text: str, limit: int, url: str | None) -> str:
    if len(text) <= limit:
        return text
    tail = f"… <{url}|see the full view>" if url else "… (truncated)"
    return text[: limit - len(tail)] + tail


def _state_kind(alert: AlertView) -> NotificationKind:
    """The template that shows an alert as it is now (for rewriting the original message)."""
    if alert.is_resolved:
        return NotificationKind.RESOLVED
    if alert.status == AlertStatus.ACKNOWLEDGED or alert.acknowledged_by:
        return NotificationKind.ACKNOWLEDGED
    return NotificationKind.FIRING


def blocks(
    message: Message, alerts: list[AlertView], kinds: list[NotificationKind] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the Block Kit blocks showing ``alerts`` (each with its kind)."""
    kinds = kinds or [message.kind] * len(alerts)
    header_kind = message.kind if len(set(kinds)) != 1 else kinds[0]
    header = render("slack", header_kind, "header", message=message)
    text = render("slack", header_kind, "text", message=message)
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:MAX_HEADER]}}
    ]
    room = MAX_BLOCKS - 1
    shown = alerts if len(alerts) <= room else alerts[: room - 1]
    for alert, kind in zip(shown, kinds, strict=False):
        section = render("slack", kind, "alert", message=message, alert=alert)
        url = alert.generator_url or message.external_url
        out.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(section, MAX_SECTION, url)}}
        )
    if len(shown) < len(alerts):
        more = len(alerts) - len(shown)
        where = f" <{message.external_url}|in the Dagster UI>" if message.external_url else ""
        out.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"…and {more} more alert(s){where}"},
            }
        )
    return _cut(text, MAX_TEXT, message.external_url), out


class SlackNotifier:
    type = ChannelType.SLACK
    threaded = True
    one_alert_per_request = False

    def __init__(
        self,
        name: str,
        config: SlackConfig,
        *,
        timeout: float = 10,
        env: Mapping[str, str] | None = None,
        resource: "SlackResource | None" = None,
    ) -> None:
        self.name, self.config, self.timeout, self.env = name, config, timeout, env
        self.resource = resource
        self._ids: dict[str, str] = {}  # channel name -> id, from posts and conversations.list

    def configured(self) -> list[str]:
        missing = []
        if not self.config.channel:
            missing.append(f"configuration.channel is not set (where Slack '{self.name}' posts)")
        if self.resource is None and env_value(self.config.token_env, self.env) is None:
            missing.append(
                f"{self.config.token_env} is not set (the bot token of Slack '{self.name}')"
            )
        return missing

    def secret_values(self) -> list[str]:
        value = env_value(self.config.token_env, self.env)
        return [value] if value else []

    def _client(self) -> "WebClient":
        if self.resource is not None:
            return self.resource.get_client()
        # Imported here: dagster-slack imports Dagster (seconds), which only a process that
        # actually posts to Slack should pay for.
        from healthmon_dagster.notify.slack_resource import slack_resource

        token = env_value(self.config.token_env, self.env) or ""
        return slack_resource(token, self.config.base_url, self.timeout).get_client()

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from slack_sdk.errors import SlackApiError

        where = f"Slack {what} for channel '{self.name}'"
        try:
            return fn(**kwargs)
        except SlackApiError as exc:
            raise _classify(exc, where) from None
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
                raise RetryableError(
                    f"{where} timed out after {self.timeout:g}s; will retry", timed_out=True
                ) from None
            raise RetryableError(f"{where} failed: {reason}; will retry") from None
        except ValueError:  # a body that is not JSON (a proxy's error page)
            raise RetryableError(f"{where} answered something that is not JSON") from None

    def send(self, message: Message) -> Delivery:
        problems = self.configured()
        if problems:
            raise NotConfigured("; ".join(problems))
        client = self._client()
        thread = message.thread
        if message.kind in FOLLOW_UP_KINDS and thread is not None:
            return self._follow_up(client, message, thread)
        # Posted at the top level: an announcement, or a follow-up of alerts with no thread here.
        # Looked for first (one lookup for both): this very message when an earlier attempt may
        # have posted it; the first message of the alerts a follow-up is about when it went out
        # unrecorded (its post timed out, then failed for good): found, the follow-up replies in
        # its thread.
        keys: dict[str, datetime | None] = {}
        if message.in_doubt:
            keys[message.delivery_key] = message.attempted_since
        if message.kind in FOLLOW_UP_KINDS and message.announced_key:
            keys[message.announced_key] = message.announced_since
        note = ""
        if keys:
            found, key, note = self._find_earlier(client, keys)
            if found is not None and key == message.announced_key:
                return self._follow_up(client, message, found)
            if found is not None:
                threads = {a.alert_id: found for a in message.alerts if a.thread is None}
                return Delivery(
                    detail=f"found ts={found.ref}, posted by an earlier attempt; not posted again",
                    threads=threads,
                )
        text, body = blocks(message, list(message.alerts))
        answer = self._call(
            "chat.postMessage",
            client.chat_postMessage,
            channel=self.config.channel or "",
            text=text,
            blocks=body,
            unfurl_links=False,
            unfurl_media=False,
            metadata=_metadata(message),
        )
        conversation = str(answer.get("channel") or self.config.channel or "")
        if CHANNEL_ID.match(conversation):
            self._ids[(self.config.channel or "").lstrip("#")] = conversation
        ref = ThreadRef(str(answer["ts"]), conversation)
        threads = {a.alert_id: ref for a in message.alerts if a.thread is None}
        return Delivery(detail=f"posted ts={ref.ref}{note}", threads=threads)

    def _find_earlier(
        self,
        client: "WebClient",
        keys: Mapping[str, datetime | None],
        thread: ThreadRef | None = None,
    ) -> tuple[ThreadRef | None, str, str]:
        """The newest message (or reply in ``thread``) carrying one of ``keys`` (delivery keys,
        each with the earliest time its request can have been made) in its metadata, and that
        key; None and "" when there is none. Slack refusing the lookup (a missing scope, an
        unknown channel) is a note for the delivery's detail, not an error: the message is
        posted. A lookup that timed out or was rate limited raises (:class:`RetryableError`):
        the message waits, rather than show twice."""
        limit = self.config.lookup_messages
        if not limit:
            return None, "", ""
        try:
            conversation = (thread.conversation if thread else None) or self._channel_id(client)
            if conversation is None:
                return (
                    None,
                    "",
                    (
                        f"; no channel named {self.config.channel} in conversations.list, so no "
                        "earlier copy was looked for"
                    ),
                )
            times = list(keys.values())
            since = None if None in times else min(t for t in times if t is not None)
            oldest = f"{since.timestamp() - LOOKUP_SKEW:.6f}" if since is not None else None
            seen, cursor = 0, None
            while seen < limit:
                page: dict[str, Any] = {
                    "channel": conversation,
                    "oldest": oldest,
                    "limit": min(LOOKUP_PAGE, limit - seen),
                    "include_all_metadata": True,
                    "cursor": cursor,
                }
                if thread is not None:
                    answer = self._call(
                        "conversations.replies", client.conversations_replies, ts=thread.ref, **page
                    )
                else:
                    answer = self._call(
                        "conversations.history", client.conversations_history, **page
                    )
                messages = answer.get("messages") or []
                for posted in messages:
                    if (key := _carried(posted)) is not None and key in keys:
                        return ThreadRef(str(posted["ts"]), conversation), key, ""
                seen += len(messages)
                cursor = (answer.get("response_metadata") or {}).get("next_cursor")
                if not messages or not cursor or not answer.get("has_more"):
                    break
        except PermanentError as exc:
            return None, "", f"; could not look for an earlier copy ({exc}), so it may show twice"
        return None, "", ""

    def _channel_id(self, client: "WebClient") -> str | None:
        """The configured channel's id (conversations.history takes no ``#name``)."""
        channel = self.config.channel or ""
        if CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#")
        if name in self._ids:
            return self._ids[name]
        cursor = None
        for _ in range(MAX_LIST_PAGES):
            answer = self._call(
                "conversations.list",
                client.conversations_list,
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            for found in answer.get("channels") or []:
                if found.get("name") == name and found.get("id"):
                    self._ids[name] = str(found["id"])
                    return self._ids[name]
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return None

    def _follow_up(self, client: "WebClient", message: Message, thread: ThreadRef) -> Delivery:
        """Reply in ``thread`` and rewrite its first message. The alerts with no thread yet (it
        was just found by their first message's key: this follow-up's alerts and every other one
        that message announced) get this one, even when the reply (or the lookup of an earlier
        attempt's reply) fails: its retry, and the next follow-up of any of them, replies here
        without looking for it again."""
        conversation = thread.conversation or self.config.channel or ""
        here = ThreadRef(thread.ref, conversation)
        threads = {
            a.alert_id: here for a in (*message.alerts, *message.thread_alerts) if a.thread is None
        }
        reply = "\n".join(
            render("slack", message.kind, "reply", message=message, alert=a) for a in message.alerts
        )
        found, note = None, ""
        # A reply of an earlier attempt may be in the thread, even in one found just now: that
        # attempt may have found it too and replied, then died before recording either.
        if message.in_doubt:
            try:
                found, _, note = self._find_earlier(
                    client, {message.delivery_key: message.attempted_since}, here
                )
            except DeliveryError as exc:
                exc.threads = threads
                raise
        if found is None:
            try:
                self._call(
                    "chat.postMessage (thread reply)",
                    client.chat_postMessage,
                    channel=conversation,
                    thread_ts=thread.ref,
                    text=_cut(reply, MAX_TEXT, message.external_url),
                    unfurl_links=False,
                    metadata=_metadata(message),
                )
            except DeliveryError as exc:
                exc.threads = threads
                raise
        else:
            note = f"; the reply ts={found.ref} was posted by an earlier attempt, not again"
        # The reply is what notifies; rewriting the original is a courtesy: a failure there is
        # reported in the delivery's detail, never a reason to post the reply again.
        shown = [
            replace(a, thread=here) if a.thread is None else a
            for a in (message.thread_alerts or message.alerts)
        ]
        text, body = blocks(message, shown, [_state_kind(a) for a in shown])
        try:
            self._call(
                "chat.update",
                client.chat_update,
                channel=conversation,
                ts=thread.ref,
                text=text,
                blocks=body,
            )
        except DeliveryError as exc:
            return Delivery(
                detail=f"replied in thread {thread.ref}{note}; original not updated: {exc}",
                threads=threads,
            )
        if threads:
            note += "; the thread was found by the key of the alerts' first message"
        return Delivery(
            detail=f"replied in thread {thread.ref} and updated it{note}", threads=threads
        )


def _metadata(message: Message) -> dict[str, Any]:
    """The message metadata every post carries: how a later attempt recognises it."""
    return {"event_type": EVENT_TYPE, "event_payload": {"delivery_key": message.delivery_key}}


def _carried(posted: Mapping[str, Any]) -> str | None:
    """The delivery key a posted message carries in its metadata (None: not one of ours)."""
    metadata = posted.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    key = payload.get("delivery_key") if isinstance(payload, Mapping) else None
    return key if isinstance(key, str) else None


def _classify(exc: Any, where: str) -> DeliveryError:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    headers = getattr(response, "headers", None) or {}
    if status == 429 or error in ("ratelimited", "rate_limited"):
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        return RetryableError(
            f"{where}: rate limited (429)",
            retry_after=rate_limit_wait(retry_after),
            rate_limited=True,
        )
    if status >= 500:
        return RetryableError(f"{where}: HTTP {status}; will retry")
    if error in RETRYABLE_ERRORS:
        return RetryableError(f"{where}: {error}; will retry")
    return PermanentError(
        f"{where}: {error or f'HTTP {status}'}; check the token's scopes and that the bot is in "
        "the channel"
    )
