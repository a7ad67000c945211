"""The ``email`` channel: SMTP with STARTTLS or SSL and login, a text and an HTML part.

One thread per alert: every message has a deterministic ``Message-ID`` (from the notification's
delivery key, so a retry of the same notification carries the same id and mail systems drop the
copy); the first message about an alert starts its thread, and the acknowledgement and the resolve
answer it (``In-Reply-To`` / ``References``), so a mail client shows an alert's story as one
conversation.

Configuration: ``host`` or ``host_env`` (default ``HEALTHMON_SMTP_HOST``), ``port`` or ``port_env``
(default ``HEALTHMON_SMTP_PORT``; else 587 for STARTTLS, 465 for SSL, 25 without TLS),
``security`` (``starttls`` | ``ssl`` | ``none``), ``username_env`` / ``password_env`` (login),
``ca_file`` (a CA bundle to trust, for a private CA), ``from_address``, ``to`` (a list).
"""

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Literal

from pydantic import Field

from healthmon_dagster.enums import ChannelType
from healthmon_dagster.notify.base import (
    ChannelConfig,
    Delivery,
    Message,
    NotConfigured,
    PermanentError,
    RetryableError,
    ThreadRef,
    env_value,
)
from healthmon_dagster.notify.templates import render

_ENV = r"^[A-Z_][A-Z0-9_]*$"
_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class EmailConfig(ChannelConfig):
    host: str | None = None
    host_env: str = Field(default="HEALTHMON_SMTP_HOST", pattern=_ENV)
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: str = Field(default="HEALTHMON_SMTP_PORT", pattern=_ENV)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username_env: str | None = Field(default=None, pattern=_ENV)
    password_env: str | None = Field(default=None, pattern=_ENV)
    ca_file: str | None = None
    from_address: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[str] = Field(default_factory=list)


def message_id(delivery_key: str, from_address: str) -> str:
    """The ``Message-ID`` of the email that carries a notification (the same on every retry)."""
    return f"<{delivery_key[:40]}@{from_address.rsplit('@', 1)[1]}>"


class EmailNotifier:
    type = ChannelType.EMAIL
    threaded = True
    one_alert_per_request = False

    def __init__(
        self,
        name: str,
        config: EmailConfig,
        *,
        timeout: float = 10,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.config, self.timeout, self.env = name, config, timeout, env

    def _host_port(self) -> tuple[str | None, int, str | None]:
        c = self.config
        host = c.host or env_value(c.host_env, self.env)
        port_text = env_value(c.port_env, self.env)
        if c.port is not None:
            return host, c.port, None
        if port_text is None:
            return host, _DEFAULT_PORTS[c.security], None
        try:
            return host, int(port_text), None
        except ValueError:
            return host, 0, f"{c.port_env} is not a port number"

    def configured(self) -> list[str]:
        c = self.config
        host, _, port_problem = self._host_port()
        missing = []
        if not c.from_address:
            missing.append(f"configuration.from_address is not set (the sender of '{self.name}')")
        if not c.to:
            missing.append(f"configuration.to is empty (the recipients of email '{self.name}')")
        if not host:
            missing.append(f"{c.host_env} is not set (the SMTP server of email '{self.name}')")
        if port_problem:
            missing.append(port_problem)
        for var in (c.username_env, c.password_env):
            if var and env_value(var, self.env) is None:
                missing.append(f"{var} is not set (the SMTP login of email '{self.name}')")
        return missing

    def secret_values(self) -> list[str]:
        names = [self.config.password_env, self.config.username_env]
        return [v for n in names if n and (v := env_value(n, self.env))]

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: subject, text and HTML parts, thread headers."""
        kind = message.kind
        texts = [
            render("email", kind, "alert_text", message=message, alert=a) for a in message.alerts
        ]
        htmls = [
            render("email", kind, "alert_html", message=message, alert=a) for a in message.alerts
        ]
        mail = EmailMessage()
        mail["Subject"] = render("email", kind, "subject", message=message)[:250]
        mail["From"] = self.config.from_address or ""
        mail["To"] = ", ".join(self.config.to)
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = message_id(message.delivery_key, self.config.from_address or "@")
        threads = list(dict.fromkeys(a.thread.ref for a in message.alerts if a.thread))
        if threads:
            mail["In-Reply-To"] = threads[0]
            mail["References"] = " ".join(threads[:20])
        mail["X-Healthmon-Group"] = message.group_key[:200]
        mail.set_content(render("email", kind, "text", message=message, alert_parts=texts) + "\n")
        mail.add_alternative(
            render("email", kind, "html", message=message, alert_parts=htmls), subtype="html"
        )
        return mail

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.config.ca_file)

    def send(self, message: Message) -> Delivery:
        problems = self.configured()
        if problems:
            raise NotConfigured("; ".join(problems))
        c = self.config
        host, port, _ = self._host_port()
        assert host is not None
        where = f"SMTP server {host}:{port} of email '{self.name}'"
        mail = self.build(message)
        try:
            smtp: smtplib.SMTP
            if c.security == "ssl":
                smtp = smtplib.SMTP_SSL(host, port, timeout=self.timeout, context=self._tls())
            else:
                smtp = smtplib.SMTP(host, port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if c.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise PermanentError(
                            f"{where} does not offer STARTTLS; set security: ssl or none"
                        )
                    smtp.starttls(context=self._tls())
                    smtp.ehlo()
                if c.username_env and c.password_env:
                    smtp.login(
                        env_value(c.username_env, self.env) or "",
                        env_value(c.password_env, self.env) or "",
                    )
                refused = smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                f"{where} rejected the login ({exc.smtp_code}); check {c.username_env} and "
                f"{c.password_env}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise PermanentError(
                f"{where} does not offer what the configuration asks (AUTH for the login, or "
                "STARTTLS); check security, username_env and password_env"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _by_code(codes[0], f"{where} refused every recipient ({codes})") from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"{where} answered {exc.smtp_code}") from None
        except ssl.SSLError as exc:
            raise PermanentError(
                f"TLS with {where} failed: {exc.reason or type(exc).__name__}; check security "
                "and ca_file"
            ) from None
        except TimeoutError:
            raise _timed_out(where, self.timeout) from None
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib turns a read that timed out into "Connection unexpectedly closed: timed out"
            if "timed out" in str(exc):
                raise _timed_out(where, self.timeout) from None
            raise RetryableError(f"{where} closed the connection mid-session; will retry") from None
        except (OSError, smtplib.SMTPException) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise RetryableError(f"{where} is unavailable: {reason}; will retry") from None
        threads = {
            a.alert_id: ThreadRef(str(mail["Message-ID"])) for a in message.alerts if not a.thread
        }
        detail = f"accepted for {len(c.to) - len(refused)} of {len(c.to)} recipient(s)"
        return Delivery(detail=detail, threads=threads)


def _timed_out(where: str, timeout: float) -> RetryableError:
    # The server may have taken the message: the retry carries the same Message-ID.
    return RetryableError(f"{where} did not answer within {timeout:g}s; will retry", timed_out=True)


def _by_code(code: int, text: str) -> PermanentError | RetryableError:
    # SMTP 4xx is transient (try later), 5xx permanent.
    if 400 <= code < 500:
        return RetryableError(f"{text}; will retry")
    return PermanentError(f"{text}; check the addresses and the server's policy")
