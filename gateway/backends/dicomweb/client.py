"""The HTTP side of the dicomweb backend: one pooled aiohttp session per upstream.

Hygiene the issue asks for lives here and nowhere else: connection pooling, a time budget
per request (only time spent waiting on the origin counts, not a slow modality reading
results), TLS verification on by default, credentials from environment variables, retries
with backoff only for idempotent GETs, and every failure turned into a gateway error by
:mod:`gateway.backends.dicomweb.outcomes`.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
from multidict import CIMultiDictProxy
from yarl import URL

from gateway import __version__
from gateway.backends.dicomweb.jsonstream import WHOLE_BODY_MAX, JsonArrayParser, parse_array
from gateway.backends.dicomweb.outcomes import (
    bad_response,
    error_for_exception,
    error_for_status,
    is_retryable,
    is_success,
)
from gateway.errors import ConfigError, GatewayError
from gateway.logging import get_logger
from gateway.model.status import HttpStatus, Operation
from gateway.settings import DicomwebBackendSettings, validate_dicomweb_auth

log = get_logger("dicomweb.client")

T = TypeVar("T")

DICOM_JSON = "application/dicom+json"
JSON_TYPES = frozenset({DICOM_JSON, "application/json"})
MAX_ERROR_BODY = 64 * 1024
"""Bytes of a failure body read for its Status Report; the rest is dropped."""
MAX_BODY = 16 * 1024 * 1024
"""Largest single JSON document (a Retrieve answer, or one Search result) accepted."""
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for idempotent GETs after 503 or a connection failure (never for writes)."""

    attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0

    def delay(self, attempt: int, retry_after_s: int | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.attempts:
            return None
        if retry_after_s is not None:
            return float(retry_after_s) if retry_after_s <= self.max_delay_s else None
        return min(self.max_delay_s, self.base_delay_s * float(2**attempt))


class Budget:
    """The time one request may spend waiting on the origin (connect, headers, body)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.remaining = seconds

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` within what is left; raise :class:`TimeoutError` past it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(self.remaining, 0.0)):
                return await awaitable
        finally:
            self.remaining -= loop.time() - started


class Response:
    """A 2xx answer whose body has not been read yet."""

    def __init__(self, raw: aiohttp.ClientResponse, budget: Budget, operation: Operation) -> None:
        self.raw = raw
        self.status = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        self._budget = budget
        self._operation = operation

    @property
    def warnings(self) -> tuple[str, ...]:
        """The texts of all ``Warning`` headers (RFC 7234 ``299 {service}: {text}``)."""
        return tuple(self.headers.getall("Warning", ()))

    def _json_charset(self) -> str:
        if self.raw.content_type not in JSON_TYPES:
            shown = self.raw.content_type or "none"
            raise bad_response(f"Content-Type {shown}, expected {DICOM_JSON}")
        return self.raw.charset or "utf-8"

    async def json(self) -> Any:
        """The whole body as JSON (for Retrieve)."""
        charset = self._json_charset()
        body = await self._read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise bad_response("body too large")
        try:
            return json.loads(body.decode(charset).removeprefix("\ufeff"))
        except (ValueError, LookupError) as exc:
            raise bad_response(f"malformed JSON ({type(exc).__name__})") from None

    async def json_array(self) -> AsyncGenerator[dict[str, Any], None]:
        """The objects of a JSON array body, each as soon as it is complete."""
        if self.status == HttpStatus.NO_CONTENT:
            return
        charset = self._json_charset()
        size = self.raw.content_length
        if size is not None and size <= WHOLE_BODY_MAX and _is_utf8(charset):
            for item in await self._whole_array(size):
                yield item
            return
        try:
            parser = JsonArrayParser(charset=charset, max_item_chars=MAX_BODY)
        except ValueError as exc:
            raise bad_response(str(exc)) from None
        while True:
            chunk = await self._chunk()
            try:
                items = parser.feed(chunk) if chunk else parser.close()
            except ValueError as exc:
                if not chunk and not parser.started:
                    return  # an empty 200 body: tolerate it as "no results"
                raise bad_response(f"malformed JSON: {exc}") from None
            for item in items:
                yield item
            if not chunk:
                return

    async def _whole_array(self, size: int) -> list[dict[str, Any]]:
        body = await self._read(size)
        if not body.strip():
            return []  # an empty 200 body: tolerate it as "no results"
        try:
            return parse_array(body)
        except ValueError as exc:
            raise bad_response(f"malformed JSON: {exc}") from None

    async def discard(self) -> None:
        """Read and drop a small body so the connection can be reused (Create/Update)."""
        with contextlib.suppress(GatewayError):
            await self._read(MAX_ERROR_BODY)

    async def _chunk(self) -> bytes:
        try:
            return await self._budget.wait(self.raw.content.readany())
        except Exception as exc:
            raise error_for_exception(exc, self._operation, self._budget.seconds) from exc

    async def _read(self, limit: int) -> bytes:
        try:
            return await read_limited(self.raw, self._budget, limit)
        except Exception as exc:
            raise error_for_exception(exc, self._operation, self._budget.seconds) from exc


class DicomwebClient:
    """One upstream origin server: its base URL and the one pooled session to it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout_s: float,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    @classmethod
    def open(
        cls,
        settings: DicomwebBackendSettings,
        *,
        key: str,
        environ: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> DicomwebClient:
        """Build the session (call inside the running loop); ``key`` names the settings table."""
        env = os.environ if environ is None else environ
        headers = {"Accept": DICOM_JSON, "User-Agent": f"modality-gateway/{__version__}"}
        headers.update(settings.headers)
        _auth(settings, key, env, headers)
        connector = aiohttp.TCPConnector(ssl=_ssl_context(settings, key))
        session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            # Our own Budget bounds every wait; aiohttp's total timeout would also count the
            # time a slow modality takes to read streamed results.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.timeout_s),
            raise_for_status=False,
        )
        return cls(session, settings.url, settings.timeout_s, retry)

    def url(
        self,
        *segments: str,
        query: Sequence[tuple[str, str]] | str = (),
        list_params: frozenset[str] = frozenset(),
    ) -> URL:
        """``{base}/{segments}?{query}`` with path segments and values percent-encoded.

        A bare string query is used as is (the ``?update`` flag). Commas separate values
        only in ``includefield`` and the parameters named in ``list_params`` (UID lists,
        PS3.18 8.3.4.1); elsewhere a comma is part of the value and is encoded.
        """
        path = "/".join(quote(s, safe="") for s in segments)
        text = f"{self.base_url}/{path}" if path else self.base_url
        if isinstance(query, str):
            qs = query
        else:
            lists = list_params | {"includefield"}
            qs = "&".join(
                f"{quote(k, safe='.')}={quote(v, safe=',*' if k in lists else '*')}"
                for k, v in query
            )
        return URL(f"{text}?{qs}" if qs else text, encoded=True)

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: URL,
        operation: Operation,
        *,
        body: Any = None,
        idempotent: bool = False,
    ) -> AsyncIterator[Response]:
        """Send one request and yield its 2xx answer; raise a gateway error otherwise.

        Idempotent requests are retried with backoff after 503 or a connection failure.
        Leaving the block early (an exception, a closed generator) closes the connection, so
        an unread body is aborted instead of drained.
        """
        data = None
        headers: dict[str, str] = {}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = f"{DICOM_JSON}; charset=utf-8"
        attempt = 0
        while True:
            budget = Budget(self.timeout_s)
            try:
                raw = await budget.wait(
                    self._session.request(
                        method, url, data=data, headers=headers, allow_redirects=idempotent
                    )
                )
            except Exception as exc:
                error = error_for_exception(exc, operation, self.timeout_s)
                retry = idempotent and is_retryable(exc)
                delay = self.retry.delay(attempt, None) if retry else None
                if delay is None:
                    raise error from exc
                log.warning("upstream connection failed, retrying", path=url.path, delay_s=delay)
            else:
                if is_success(raw.status):
                    break
                error = await self._failure(raw, operation, budget)
                retry = idempotent and raw.status == HttpStatus.SERVICE_UNAVAILABLE
                delay = self.retry.delay(attempt, error.retry_after_s) if retry else None
                if delay is None:
                    raise error
                log.warning("upstream unavailable, retrying", path=url.path, delay_s=delay)
            await asyncio.sleep(delay)
            attempt += 1
        try:
            yield Response(raw, budget, operation)
        finally:
            raw.close()

    async def _failure(
        self, raw: aiohttp.ClientResponse, operation: Operation, budget: Budget
    ) -> GatewayError:
        try:
            body = await read_limited(raw, budget, MAX_ERROR_BODY)
        except Exception:
            body = b""
        finally:
            raw.close()
        error = error_for_status(
            raw.status, operation, body=body, content_type=raw.content_type, headers=raw.headers
        )
        log.warning(
            "upstream refused request",
            operation=operation.value,
            http_status=raw.status,
            kind=error.kind.value,
        )
        return error

    async def aclose(self) -> None:
        """Close the pooled connections, even while the caller is being cancelled.

        The composition root closes backends during shutdown, inside a cancelled scope;
        an unshielded close would be interrupted and leak the connector.
        """
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
            await self._session.close()


def _is_utf8(charset: str) -> bool:
    """True for any name of UTF-8; an unknown name is left to the streaming parser's error."""
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


async def read_limited(raw: aiohttp.ClientResponse, budget: Budget, limit: int) -> bytes:
    """The body up to ``limit`` bytes (more only if the last chunk overshoots)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await budget.wait(raw.content.readany())
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _auth(
    settings: DicomwebBackendSettings, key: str, env: Mapping[str, str], headers: dict[str, str]
) -> None:
    """Credentials from the environment variables the settings name (never from the file)."""
    validate_dicomweb_auth(settings, key)  # also checked at load; settings may be built in code
    if settings.bearer_token_env:
        token = _env(env, settings.bearer_token_env, f"{key}.bearer_token_env")
        headers["Authorization"] = f"Bearer {token}"
    if settings.basic_user_env and settings.basic_password_env:
        user = _env(env, settings.basic_user_env, f"{key}.basic_user_env")
        password = _env(env, settings.basic_password_env, f"{key}.basic_password_env")
        if ":" in user:
            raise ConfigError(f"{key}.basic_user_env", "a user name may not contain ':'")
        # RFC 7617, UTF-8 (aiohttp's BasicAuth is deprecated and Latin-1 only).
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"


def _env(env: Mapping[str, str], name: str, key: str) -> str:
    value = env.get(name)
    if not value:
        raise ConfigError(key, f"environment variable {name} is not set")
    return value


def _ssl_context(settings: DicomwebBackendSettings, key: str) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        log.warning("TLS verification is off for this upstream", backend=key)
        return False
    try:
        return ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.ca_file", f"cannot load CA file: {exc}") from None
