"""Export of ingested metrics to Datadog's ``POST /api/v2/series``.

Every ``interval`` the exporter drains the :class:`ExportBuffer` and sends its
series in as few requests as the intake allows: each body is at most 512,000
bytes as sent and under 5,242,880 bytes decompressed. Series are grouped by raw
size first; a group that compresses too large is split again, and a request the
intake answers with 413 is split in halves, so no body is ever sent twice after
a 413 and no series is dropped for its neighbours' size.

Each drain tells the buffer how long its interval lasted, measured on the
monotonic clock since the previous drain (the first interval begins when the
exporter is built), so rates stay per second when an interval is not the
configured one: the drain at shutdown covers part of an interval, and the
drain after an export that overran covers several.

Splitting stops where size cannot be the cause: a request under a sixteenth of
both limits (:data:`SPLIT_FLOOR_WIRE`, :data:`SPLIT_FLOOR_RAW`) that still gets
413 is refused for another reason, so its series are dropped, and for the rest
of that flush a 413 is final without splitting. An intake that answers 413 to
everything thus costs a few requests per flush, not two per series.

A request is retried on 408, 429, 5xx, timeouts and transport errors, as
Datadog's own clients do, with exponential backoff and jitter, waiting at least
as long as ``X-RateLimit-Reset`` or ``Retry-After`` ask. 400 and 403 are final.
After ``max_attempts`` a request's series are dropped and counted. Datadog has
no idempotency key for metrics, and a request that timed out (or lost its
connection, or got a 5xx) after its body was sent may have been applied: its
retry then counts the same counts twice. Dropping it instead would lose them
whenever it was not applied.

Dropped series are logged as one ERROR line per reason per flush, with the
count, however many requests it took.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import aiohttp
import orjson

from tocsin.channels.datadog_buffer import ExportBuffer, ExportSeries
from tocsin.clock import Clock
from tocsin.config import DatadogExportConfig
from tocsin.errors import DeliveryError
from tocsin.logs import register_secret

__all__ = [
    "DatadogExporter",
    "ExportBuffer",
    "ExportSeries",
    "ExportStats",
]

log = logging.getLogger(__name__)

#: The intake's limits on one request body, as sent and decompressed.
WIRE_LIMIT = 512_000
RAW_LIMIT = 5_242_880 - 1
#: A request this small that gets 413 is not refused for its size.
SPLIT_FLOOR_WIRE = WIRE_LIMIT // 16
SPLIT_FLOOR_RAW = RAW_LIMIT // 16
#: First retry delay, doubled per attempt, and the cap on any one wait.
BACKOFF = 1.0
MAX_DELAY = 300.0

_ENVELOPE = (b'{"series":[', b"]}")
_ENVELOPE_SIZE = len(_ENVELOPE[0]) + len(_ENVELOPE[1])
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,199}")
# Compressing a small body inline is cheaper than a hop to a worker thread.
_INLINE_COMPRESS = 64 * 1024
_EXTRA = {"channel": "datadog"}

Part = tuple[bytes, int]
"""One encoded series and its number of points."""


class ExportStats:
    """Counters of the export; read by logs, the API and self-metrics."""

    __slots__ = (
        "requests",
        "series_sent",
        "points_sent",
        "failures",
        "dropped",
        "last_success",
        "last_error",
        "lag",
    )

    def __init__(self) -> None:
        #: HTTP requests made, retries included.
        self.requests = 0
        self.series_sent = 0
        self.points_sent = 0
        #: Requests that failed, retried or not, and batches lost to an error
        #: before their request.
        self.failures = 0
        #: Series given up on (final answer, attempts exhausted, cut short).
        self.dropped = 0
        #: Wall-clock time of the last accepted request.
        self.last_success: float | None = None
        #: Reason of the last failure (``rate_limited``, ``auth``, ...).
        self.last_error: str | None = None
        #: Seconds from a scheduled export to its last answer.
        self.lag = 0.0

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class DatadogExporter:
    """Send the buffer's series to Datadog every ``config.interval``.

    Build ``buffer`` with :meth:`ExportBuffer.from_config` from the same
    ``config``: the buffer applies the prefix, tags and host. Build the
    exporter when the buffer starts to take samples: that begins its first
    interval.

    :param api_key: sent as ``DD-API-KEY``; never logged.
    :param clock: wall time stamps the points, monotonic time paces the loop
        and measures each interval.
    :param session: owned by the caller, who also closes it.
    :param rng: source of backoff jitter.
    :param sleep: awaited for every wait, so tests can skip real time.
    :param extra: awaited at each export with its POSIX time; the series it
        returns are sent with the buffer's (Tocsin's own metrics).
    """

    def __init__(
        self,
        config: DatadogExportConfig,
        api_key: str,
        buffer: ExportBuffer,
        *,
        clock: Clock,
        session: aiohttp.ClientSession,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        extra: Callable[[int], Awaitable[list[dict]]] | None = None,
    ) -> None:
        register_secret(api_key)
        self._extra = extra
        self._config = config
        self._buffer = buffer
        self._clock = clock
        self._session = session
        self._rng = rng or random.Random()
        self._sleep = sleep
        #: Where the intake lives (``https://api.datadoghq.com``) and the series URL.
        self.base_url = (config.base_url or f"https://api.{config.site}").rstrip("/")
        self.url = self.base_url + "/api/v2/series"
        self._headers = {
            "DD-API-KEY": api_key,
            "Content-Type": "application/json",
            "Content-Encoding": config.compression,
        }
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._closing = asyncio.Event()
        self._warned: str | None = None
        #: Monotonic time of the previous drain: where the current interval began.
        self._drained_at = clock.monotonic()
        self.stats = ExportStats()

    async def run(self) -> None:
        """Drain and send every interval until :meth:`close`; failures are logged."""
        interval = self._config.interval
        # DEBUG: the daemon's start-up story already tells that export is on.
        log.debug(
            "Datadog export every %gs to %s",
            interval,
            self.url,
            extra={**_EXTRA, "event": "export_started"},
        )
        due = self._clock.monotonic() + interval
        while await self._wait(due - self._clock.monotonic()):
            try:
                await self._export()
            except Exception:
                log.exception("Datadog export failed unexpectedly", extra=_EXTRA)
            now = self._clock.monotonic()
            self.stats.lag = now - due
            due += interval
            if due <= now:
                # The export overran whole intervals; the buffer kept
                # aggregating meanwhile, so skipping the missed ticks loses
                # nothing.
                due += math.ceil((now - due) / interval) * interval
        log.debug("Datadog export stopped", extra={**_EXTRA, "event": "export_stopped"})

    async def flush(self, timeout: float) -> None:
        """Drain and send now, giving up after ``timeout`` seconds (at shutdown)."""
        series = await self._collect()
        if not series:
            return
        before = self.stats.dropped
        try:
            async with asyncio.timeout(timeout):
                await self.send_series(series)
        except TimeoutError:
            log.warning(
                "Datadog export cut short after %gs; %d series not sent",
                timeout,
                self.stats.dropped - before,
                extra={**_EXTRA, "reason": "timeout"},
            )
        except Exception:
            # Already counted as dropped; shutdown goes on.
            log.exception("Datadog export failed unexpectedly", extra=_EXTRA)

    def close(self) -> None:
        """Make :meth:`run` return at its next wait; safe to call twice."""
        self._closing.set()

    async def send_series(self, series: list[dict]) -> None:
        """Send ``series`` (Datadog v2 ``MetricSeries`` dicts) in as many requests
        as the limits need, retrying and splitting as described above."""
        drops = _Drops()
        parts = self._encode(series, drops)
        pending: deque[list[Part]] = deque(_group(parts, RAW_LIMIT))
        unsettled = len(parts)
        try:
            while pending:
                group = pending.popleft()
                instead = await self._send_group(group, drops)
                if instead:
                    pending.extendleft(reversed(instead))
                else:
                    unsettled -= len(group)
        except asyncio.CancelledError:
            self.stats.dropped += unsettled
            raise
        except Exception as error:
            # A fault outside any request (encoding, compression) loses the
            # series not yet settled like a refused request does.
            self.stats.failures += 1
            detail = f"unexpected {type(error).__name__}: {error}"
            self._final(drops, unsettled, "internal", None, detail)
            raise
        finally:
            self._report(drops)

    async def _send_group(
        self, group: list[Part], drops: _Drops
    ) -> list[list[Part]] | None:
        """Send one run of series, or return the smaller runs to send instead."""
        raw = _body(group)
        body = b""
        if len(raw) <= RAW_LIMIT:
            body = await _compress(raw, self._config.compression)
        if len(group) == 1 and (not body or len(body) > WIRE_LIMIT):
            self._final(drops, 1, "too_large", None, "one series exceeds the limits")
            return None
        if len(body) > WIRE_LIMIT:
            # Aim a little below the limit: pieces do not compress equally.
            pieces = max(2, math.ceil(len(body) / (WIRE_LIMIT * 0.9)))
            return _split(group, pieces)
        outcome = await self._deliver(body, group, drops)
        if outcome != "too_large":
            return None
        is_small = len(body) <= SPLIT_FLOOR_WIRE and len(raw) <= SPLIT_FLOOR_RAW
        if len(group) > 1 and not is_small and not drops.refuses_small:
            return _split(group, 2)
        if is_small:
            drops.refuses_small = True
        detail = f"the intake answered 413 to {len(body)} bytes ({len(raw)} raw)"
        self._final(drops, len(group), "too_large", 413, detail)
        return None

    async def _export(self) -> None:
        series = await self._collect()
        if series:
            await self.send_series(series)

    async def _collect(self) -> list[dict]:
        series = self._drain()
        if self._extra is None:
            return series

        try:
            series += await self._extra(int(self._clock.time()))
        except Exception:
            # The buffer's series are drained already: they go out regardless.
            log.exception("cannot collect the extra series", extra=_EXTRA)
        return series

    def _drain(self) -> list[dict]:
        """Return the buffer's series of the time since the previous drain."""
        now = self._clock.monotonic()
        series = self._buffer.drain(self._clock.time(), now - self._drained_at)
        # Only now: a drain that raised left its samples in the buffer, so its
        # interval goes on.
        self._drained_at = now

        return series

    async def _wait(self, delay: float) -> bool:
        """Wait ``delay`` seconds or until :meth:`close`; return whether to go on."""
        if self._closing.is_set():
            return False
        sleeper = asyncio.ensure_future(self._sleep(max(delay, 0.0)))
        closer = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((sleeper, closer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closer.cancel()

        return not self._closing.is_set()

    def _encode(self, series: list[dict], drops: _Drops) -> list[Part]:
        """Serialise each series; drop and count the ones the intake would refuse."""
        parts: list[Part] = []
        for item in series:
            try:
                points = item["points"]
                valid = _NAME.fullmatch(item["metric"]) is not None and all(
                    math.isfinite(point["value"]) for point in points
                )
            except (KeyError, TypeError):
                valid = False
            if valid:
                parts.append((orjson.dumps(item), len(points)))
        invalid = len(series) - len(parts)
        if invalid:
            self._final(drops, invalid, "invalid", None, "invalid name or value")

        return parts

    async def _deliver(
        self, body: bytes, group: list[Part], drops: _Drops
    ) -> Literal["sent", "dropped", "too_large"]:
        """Post one body until it is accepted, refused or out of attempts."""
        attempts = self._config.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._post(body)
            except DeliveryError as error:
                self.stats.failures += 1
                self.stats.last_error = error.reason
                if error.reason == "too_large":
                    return "too_large"
                if not error.retryable or attempt == attempts:
                    count, status = len(group), error.status
                    self._final(drops, count, error.reason, status, str(error))
                    return "dropped"
                delay = self._backoff(attempt, error.retry_after)
                self._warn(error, attempt, delay)
                await self._sleep(delay)
                continue
            self._succeeded(group)
            return "sent"
        raise AssertionError("unreachable: the last attempt returns")

    async def _post(self, body: bytes) -> None:
        """Make one request.

        :raises DeliveryError: if it fails, with the reason and whether to retry.
        """
        self.stats.requests += 1
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                answer = await response.read()
        except TimeoutError:
            raise DeliveryError(
                "timeout", "no answer in time", retryable=True
            ) from None
        except aiohttp.ClientError as error:
            raise DeliveryError(
                "transport", type(error).__name__, retryable=True
            ) from None
        except Exception as error:
            # Not the network's doing (aiohttp refuses a header value holding a
            # carriage return with ValueError): the same request would fail the
            # same way, so its series are dropped, and counted, at once.
            detail = f"unexpected {type(error).__name__}: {error}"
            raise DeliveryError("internal", detail, retryable=False) from None
        if response.status < 300:
            return
        raise _refusal(response.status, response.headers, answer, self._clock)

    def _backoff(self, attempt: int, asked: float | None) -> float:
        """Return the wait before the next attempt: doubled, jittered, at least
        what the intake asked for."""
        base = min(BACKOFF * 2 ** (attempt - 1), MAX_DELAY)
        delay = base / 2 + self._rng.random() * base / 2
        if asked is not None:
            delay = max(delay, asked)

        return min(delay, MAX_DELAY)

    def _succeeded(self, group: list[Part]) -> None:
        self.stats.series_sent += len(group)
        self.stats.points_sent += sum(points for _, points in group)
        self.stats.last_success = self._clock.time()
        if self._warned is not None:
            log.info(
                "Datadog export recovered",
                extra={**_EXTRA, "event": "export_recovered"},
            )
            self._warned = None

    def _warn(self, error: DeliveryError, attempt: int, delay: float) -> None:
        # Once per change of error: an outage must not log one line per retry.
        if error.reason == self._warned:
            return
        self._warned = error.reason
        log.warning(
            "Datadog export failed (%s); retrying in %.1fs",
            error,
            delay,
            extra={
                **_EXTRA,
                "reason": error.reason,
                "status": error.status,
                "attempt": attempt,
                "delay_s": round(delay, 3),
            },
        )

    def _final(
        self, drops: _Drops, count: int, reason: str, status: int | None, detail: str
    ) -> None:
        """Count series given up on; :meth:`_report` logs them."""
        self.stats.dropped += count
        self.stats.last_error = reason
        drops.add(count, reason, status, detail)

    def _report(self, drops: _Drops) -> None:
        """Log the series a flush dropped: one line per reason."""
        # ERROR: these series are lost. One line per reason and flush, as an
        # intake refusing everything must not log once per series or request.
        for reason, (count, status, detail) in drops.by_reason.items():
            extra = {**_EXTRA, "reason": reason, "status": status, "count": count}
            if reason == "auth":
                message = "Datadog rejected the API key (403); %d series dropped"
                log.error(message, count, extra=extra)
                continue
            log.error(
                "Datadog export dropped %d series (%s): %s",
                count,
                reason,
                detail,
                extra=extra,
            )


class _Drops:
    """The series one flush gave up on, by reason."""

    __slots__ = ("by_reason", "refuses_small")

    def __init__(self) -> None:
        #: reason -> (series, status and detail of the first drop).
        self.by_reason: dict[str, tuple[int, int | None, str]] = {}
        #: Whether the intake answered 413 to a request far below the limits.
        self.refuses_small = False

    def add(self, count: int, reason: str, status: int | None, detail: str) -> None:
        known = self.by_reason.get(reason)
        if known is not None:
            count += known[0]
            status, detail = known[1], known[2]
        self.by_reason[reason] = (count, status, detail)


def _refusal(
    status: int, headers: Mapping[str, str], answer: bytes, clock: Clock
) -> DeliveryError:
    """Return the error for a non-2xx answer."""
    if status == 413:
        return DeliveryError("too_large", "413", retryable=False, status=status)
    if status in (401, 403):
        return DeliveryError("auth", f"{status}", retryable=False, status=status)
    message = f"{status} {_errors_text(answer)}"
    if status == 408:
        return DeliveryError("timeout", message, retryable=True, status=status)
    if status == 429 or status >= 500:
        reason = "rate_limited" if status == 429 else "server_error"
        wait = _asked_wait(headers, clock)
        return DeliveryError(
            reason, message, retryable=True, status=status, retry_after=wait
        )
    return DeliveryError("client_error", message, retryable=False, status=status)


def _asked_wait(headers: Mapping[str, str], clock: Clock) -> float | None:
    """Return the seconds ``X-RateLimit-Reset`` or ``Retry-After`` ask for."""
    for name in ("X-RateLimit-Reset", "Retry-After"):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - clock.time()
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def _errors_text(answer: bytes) -> str:
    """Return the intake's ``errors`` list as short text."""
    try:
        errors = orjson.loads(answer).get("errors")
    except (orjson.JSONDecodeError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors:
        return "; ".join(str(error) for error in errors)[:300]
    return answer[:300].decode(errors="replace")


def _group(parts: list[Part], limit: int) -> list[list[Part]]:
    """Split ``parts`` into runs whose request body stays within ``limit`` bytes."""
    groups: list[list[Part]] = []
    current: list[Part] = []
    size = _ENVELOPE_SIZE
    for part in parts:
        # One comma joins this part to the previous one.
        grown = size + len(part[0]) + (1 if current else 0)
        if current and grown > limit:
            groups.append(current)
            current, grown = [], _ENVELOPE_SIZE + len(part[0])
        current.append(part)
        size = grown
    if current:
        groups.append(current)

    return groups


def _split(group: list[Part], pieces: int) -> list[list[Part]]:
    """Cut ``group`` into ``pieces`` runs of nearly equal length."""
    pieces = min(pieces, len(group))
    step, extra = divmod(len(group), pieces)
    runs, start = [], 0
    for index in range(pieces):
        end = start + step + (1 if index < extra else 0)
        runs.append(group[start:end])
        start = end

    return runs


def _body(group: list[Part]) -> bytes:
    return _ENVELOPE[0] + b",".join(part for part, _ in group) + _ENVELOPE[1]


def _compress_now(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(body) + packer.flush()
    return zlib.compress(body, 6)


async def _compress(body: bytes, encoding: str) -> bytes:
    """Compress ``body``; a large one in a worker thread (zlib releases the GIL)."""
    if len(body) <= _INLINE_COMPRESS:
        return _compress_now(body, encoding)
    return await asyncio.to_thread(_compress_now, body, encoding)
