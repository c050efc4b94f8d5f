"""Per-(provider, model) rate limiting shared by every task and run in the process.

Why hand-written: the limiter is the product's core promise under parallel load (a 60-task burst
must not turn into a 429 storm), and it has to combine four signals no library combines for us:
the configured RPM/TPM, the server's `x-ratelimit-*` / `anthropic-ratelimit-*` headers,
`retry-after` on 429/529, and an adaptive concurrency limit. Keeping it here also keeps it
time-injectable: `clock` and `sleep` are parameters, so the tests drive it without sleeping.

The pieces:

* `SlidingWindow` - at most `limit` request starts in any `period` seconds (the RPM limit).
  A log of start times rather than a token bucket, because a bucket that starts full lets
  `2 x limit` requests into one window (a full burst, then a window's worth of refill).
* `TokenBucket` - the TPM limit: an estimate is taken before the call and corrected by the
  real usage afterwards.
* AIMD concurrency: +1/limit per success, halved on a rate-limit error (at most once per
  "generation", so the in-flight requests of an old, too-high limit do not halve it again).
* Circuit breaker: after `breaker_threshold` rate-limit errors in a row the whole limiter pauses
  (exponential, capped), then lets one request through (half-open); its success closes it.
  Requests *wait* while it is open - they never fail because of it. A single 429 with a
  Retry-After pauses the whole limiter for that long too: the server has told us about the key,
  not about one request.

`acquire()` returns a `Lease`; the caller reports the outcome with `lease.success(...)` or
`lease.rate_limited(...)` / `lease.failure()`. The engine retries the failed call with backoff;
the retry's `acquire()` then waits for whatever pause the limiter decided.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Lease",
    "RateLimitState",
    "RateLimiter",
    "SlidingWindow",
    "TokenBucket",
    "limiter_for",
    "parse_duration",
    "parse_retry_after",
    "reset_limiters",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SlidingWindow:
    """At most `limit` requests in any window of `period` seconds, as the *server* counts them.

    We cannot see when a request reaches the server, only that it did so after we sent it and
    before its answer came back. So a request in flight counts as inside every window, and a
    finished one counts from the moment it finished - the latest its arrival can have been.
    That is conservative (a window lasts `period` + one latency), and it is what keeps a burst
    exact: with start times instead, requests that connect slowly arrive late and land in the
    next window together with the next batch (measured: 429s on a 60-request burst).
    Pure: every method takes `now`.
    """

    def __init__(self, limit: int, period: float, guard: float = 0.0) -> None:
        self.limit = max(1, int(limit))
        self.period = float(period)
        self.guard = float(guard)
        self.in_flight = 0
        self._done: list[float] = []  # finish times, sorted

    def _expire(self, now: float) -> None:
        horizon = now - self.period - self.guard
        cut = bisect.bisect_right(self._done, horizon)
        if cut:
            del self._done[:cut]

    def wait_time(self, now: float, poll: float = 0.05) -> float:
        """Seconds until one more request fits (0 if it fits now; `poll` if only a request in
        flight finishing can make room)."""
        self._expire(now)
        used = self.in_flight + len(self._done)
        if used < self.limit:
            return 0.0
        must_expire = used - self.limit + 1
        if must_expire > len(self._done):
            return poll
        return max(0.0, self._done[must_expire - 1] + self.period + self.guard - now)

    def take(self, now: float) -> None:
        self.in_flight += 1

    def finish(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        bisect.insort(self._done, now)

    def block_until(self, until: float, remaining: int) -> None:
        """The server says only `remaining` requests are left until `until`: make sure at most
        that many more start before then."""
        used = self.in_flight + len(self._done)
        fake_finish = until - self.period - self.guard
        for _ in range(max(0, self.limit - max(0, remaining) - used)):
            bisect.insort(self._done, fake_finish)


class TokenBucket:
    """A classic token bucket: `capacity` tokens, refilled at `rate` per second. Pure."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.level = float(capacity)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
            self._at = now

    def wait_time(self, amount: float, now: float) -> float:
        self._refill(now)
        amount = min(amount, self.capacity)  # a request larger than the bucket waits for a full one
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate if self.rate > 0 else math.inf

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= min(amount, self.capacity)

    def refund(self, amount: float, now: float) -> None:
        """Give back (positive) or charge more (negative) once the real usage is known."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def clamp(self, remaining: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.level, float(remaining))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """OpenAI's reset format (`"1s"`, `"6m0s"`, `"20ms"`, `"1h2m3.5s"`) or plain seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _parse_reset(text: str, wall_now: float) -> float | None:
    """Seconds until reset: a duration (OpenAI) or an RFC 3339 timestamp (Anthropic)."""
    seconds = parse_duration(text)
    if seconds is not None:
        return seconds
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - wall_now)


def parse_retry_after(headers: Mapping[str, str], wall_now: float | None = None) -> float | None:
    """`retry-after-ms` (preferred, more precise), else `retry-after` (seconds or HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = time.time() if wall_now is None else wall_now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """A snapshot, for logs, benchmarks and tests."""

    concurrency_limit: float
    in_flight: int
    paused_for: float
    breaker_open: bool
    rpm: int | None
    tpm: int | None
    rate_limited: int
    successes: int


class Lease:
    """One admitted request. Report its outcome exactly once."""

    __slots__ = ("_done", "_limiter", "estimate", "generation")

    def __init__(self, limiter: RateLimiter, estimate: int, generation: int) -> None:
        self._limiter = limiter
        self.estimate = estimate
        self.generation = generation
        self._done = False

    def success(self, headers: Mapping[str, str] | None = None, tokens_used: int | None = None,
                ) -> None:
        if not self._done:
            self._done = True
            self._limiter._on_success(self, headers or {}, tokens_used)

    def rate_limited(self, retry_after: float | None = None,
                     headers: Mapping[str, str] | None = None) -> None:
        """A 429/529: slow the whole provider down."""
        if not self._done:
            self._done = True
            self._limiter._on_rate_limited(self, retry_after, headers or {})

    def failure(self, headers: Mapping[str, str] | None = None) -> None:
        """Any other failure (500, timeout, bad request): frees the slot, no slow-down."""
        if not self._done:
            self._done = True
            self._limiter._on_failure(self, headers or {})


class RateLimiter:
    """RPM window + TPM bucket + AIMD concurrency + circuit breaker for one (provider, model).

    Safe to share between event loops and threads (state is guarded by a threading lock; the
    waiting itself is polling with `sleep`, so no loop-bound primitive is involved).
    """

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        period: float = 60.0,
        guard: float | None = None,
        max_concurrency: int = 64,
        initial_concurrency: int | None = None,
        min_concurrency: int = 1,
        breaker_threshold: int = 5,
        breaker_base: float = 1.0,
        breaker_max: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall: Clock = time.time,
        poll: float = 0.05,
    ) -> None:
        self.period = period
        self._guard = period * 0.01 if guard is None else guard
        self._clock, self._sleep, self._wall, self._poll = clock, sleep, wall, poll
        now = clock()
        self._window = SlidingWindow(rpm, period, self._guard) if rpm else None
        self._tokens = TokenBucket(tpm, tpm / period, now) if tpm else None
        self.max_concurrency = max_concurrency
        self.min_concurrency = max(1, min_concurrency)
        self.concurrency_limit = float(initial_concurrency or max_concurrency)
        self._in_flight = 0
        self._generation = 0
        self._paused_until = 0.0
        self._consecutive_limited = 0
        self._breaker_trips = 0
        self._half_open = False
        self.breaker_threshold = breaker_threshold
        self.breaker_base = breaker_base
        self.breaker_max = breaker_max
        self.rate_limited_count = 0
        self.success_count = 0
        self._lock = threading.Lock()

    # ---- admission -------------------------------------------------------------------------

    def try_acquire(self, estimate: int = 0) -> Lease | float:
        """A Lease if the request may start now, else the seconds to wait before asking again."""
        with self._lock:
            now = self._clock()
            waits = [self._paused_until - now]
            limit = 1 if self._half_open else int(self.concurrency_limit)
            if self._in_flight >= max(1, limit):
                waits.append(self._poll)
            if self._window is not None:
                waits.append(self._window.wait_time(now, self._poll))
            if self._tokens is not None:
                waits.append(self._tokens.wait_time(estimate, now))
            wait = max(waits)
            if wait > 0:
                return max(wait, 0.001)
            self._in_flight += 1
            if self._window is not None:
                self._window.take(now)
            if self._tokens is not None:
                self._tokens.take(estimate, now)
            return Lease(self, estimate, self._generation)

    async def acquire(self, estimate: int = 0) -> Lease:
        """Wait until the request may start. Never fails: a slow provider only means waiting."""
        while True:
            got = self.try_acquire(estimate)
            if isinstance(got, Lease):
                return got
            await self._sleep(min(got, 1.0) if got != math.inf else 1.0)

    # ---- outcomes --------------------------------------------------------------------------

    def _on_success(self, lease: Lease, headers: Mapping[str, str], used: int | None) -> None:
        with self._lock:
            now = self._clock()
            self._release(now)
            self.success_count += 1
            self._consecutive_limited = 0
            if self._half_open:
                self._half_open = False
                self._breaker_trips = 0
            self.concurrency_limit = min(float(self.max_concurrency),
                                         self.concurrency_limit + 1.0 / self.concurrency_limit)
            if self._tokens is not None and used is not None:
                self._tokens.refund(lease.estimate - used, now)
            self._observe_headers(headers, now)

    def _on_rate_limited(self, lease: Lease, retry_after: float | None,
                         headers: Mapping[str, str]) -> None:
        with self._lock:
            now = self._clock()
            self._release(now)
            self.rate_limited_count += 1
            pause = retry_after or 0.0
            # A 429 on a request sent before our last slow-down says nothing new: a burst of
            # 44 such answers is one signal, not 44 (counting each tripped the breaker
            # dozens of times and paused a benchmark for a minute).
            if lease.generation == self._generation:
                self.concurrency_limit = max(float(self.min_concurrency),
                                             self.concurrency_limit / 2.0)
                self._generation += 1
                self._consecutive_limited += 1
                if self._consecutive_limited >= self.breaker_threshold or self._half_open:
                    self._breaker_trips += 1
                    backoff = min(self.breaker_max,
                                  self.breaker_base * 2 ** (self._breaker_trips - 1))
                    pause = max(pause, backoff)
                    self._half_open = True
                    self._consecutive_limited = 0
            self._paused_until = max(self._paused_until, now + pause)
            self._observe_headers(headers, now)

    def _on_failure(self, lease: Lease, headers: Mapping[str, str]) -> None:
        with self._lock:
            now = self._clock()
            self._release(now)
            self._observe_headers(headers, now)

    def _release(self, now: float) -> None:
        self._in_flight -= 1
        if self._window is not None:
            self._window.finish(now)

    # ---- header feedback -------------------------------------------------------------------

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        with self._lock:
            self._observe_headers(headers, self._clock())

    def _observe_headers(self, headers: Mapping[str, str], now: float) -> None:
        """Correct the buckets from what the server says (OpenAI and Anthropic names)."""
        if not headers:
            return
        h = {k.lower(): v for k, v in headers.items()}
        wall = self._wall()
        for kind in ("requests", "tokens"):
            limit = _first_int(h, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit")
            remaining = _first_int(h, f"x-ratelimit-remaining-{kind}",
                                   f"anthropic-ratelimit-{kind}-remaining")
            reset_raw = h.get(f"x-ratelimit-reset-{kind}") or h.get(
                f"anthropic-ratelimit-{kind}-reset")
            reset = _parse_reset(reset_raw, wall) if reset_raw else None
            if kind == "requests":
                if limit is not None and self._window is None:
                    self._window = SlidingWindow(limit, self.period, self._guard)
                    self._window.in_flight = self._in_flight  # they count from now on
                elif limit is not None and limit < self._window.limit:
                    self._window.limit = max(1, limit)
                if remaining is not None and reset is not None and self._window is not None:
                    self._window.block_until(now + reset, remaining)
            else:
                if limit is not None and (self._tokens is None or limit < self._tokens.capacity):
                    self._tokens = TokenBucket(limit, limit / self.period, now)
                if remaining is not None and self._tokens is not None:
                    self._tokens.clamp(remaining, now)

    # ---- introspection ---------------------------------------------------------------------

    def state(self) -> RateLimitState:
        with self._lock:
            now = self._clock()
            return RateLimitState(
                concurrency_limit=self.concurrency_limit,
                in_flight=self._in_flight,
                paused_for=max(0.0, self._paused_until - now),
                breaker_open=self._half_open,
                rpm=self._window.limit if self._window else None,
                tpm=int(self._tokens.capacity) if self._tokens else None,
                rate_limited=self.rate_limited_count,
                successes=self.success_count,
            )


def _first_int(h: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        raw = h.get(name)
        if raw is not None:
            try:
                return int(float(raw))
            except ValueError:
                continue
    return None


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(provider: str, model: str, **settings: object) -> RateLimiter:
    """The process-wide limiter of (provider, model); created on first use from `settings`.

    Later calls get the same limiter whatever settings they pass: one key, one budget.
    """
    key = (provider, model)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = RateLimiter(**settings)  # type: ignore[arg-type]
            _LIMITERS[key] = limiter
        return limiter


def reset_limiters() -> None:
    """Forget every shared limiter (tests, benchmarks)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()
