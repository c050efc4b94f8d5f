"""The shared rate limiter, driven by a fake clock: no sleeping, no flakiness."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_agents.providers.limits import (
    Lease,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    limiter_for,
    parse_duration,
    parse_retry_after,
    reset_limiters,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(clock: FakeClock, **kw: object) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep, wall=lambda: 1_700_000_000.0, **kw)


def test_sliding_window_never_admits_more_than_the_limit_in_any_window() -> None:
    clock = FakeClock()
    limiter = make(clock, rpm=10, period=1.0, guard=0.0)
    starts: list[float] = []

    async def go() -> None:
        for _ in range(45):
            lease = await limiter.acquire()
            starts.append(clock.now)
            lease.success()  # answered at once: finish == start

    asyncio.run(go())
    for i, t in enumerate(starts):
        in_window = [s for s in starts[i:] if s < t + 1.0]
        assert len(in_window) <= 10
    # and it is not needlessly slow: 45 requests at 10/s take ~4 windows
    assert starts[-1] - starts[0] == pytest.approx(4.0, abs=0.11)


def test_token_bucket_waits_for_refill_and_takes_refunds() -> None:
    bucket = TokenBucket(capacity=100, rate=10, now=0.0)
    assert bucket.wait_time(80, now=0.0) == 0
    bucket.take(80, now=0.0)
    assert bucket.wait_time(50, now=0.0) == pytest.approx(3.0)
    bucket.refund(60, now=0.0)  # the call used 20 tokens, not 80
    assert bucket.wait_time(50, now=0.0) == 0


def test_tpm_bucket_is_corrected_by_actual_usage() -> None:
    clock = FakeClock()
    limiter = make(clock, tpm=600, period=60.0)  # 10 tokens/s
    first = limiter.try_acquire(500)
    assert isinstance(first, Lease)
    assert limiter.try_acquire(500) == pytest.approx(40.0)  # needs 400 more tokens
    first.success(tokens_used=100)  # refunds 400
    assert isinstance(limiter.try_acquire(500), Lease)


def test_rate_limit_halves_concurrency_once_per_generation_and_successes_grow_it() -> None:
    clock = FakeClock()
    limiter = make(clock, max_concurrency=16)
    leases = [limiter.try_acquire() for _ in range(8)]
    assert all(isinstance(x, Lease) for x in leases)
    for lease in leases[:4]:  # four 429s from requests sent under the same limit
        lease.rate_limited()  # type: ignore[union-attr]
    assert limiter.concurrency_limit == 8  # halved once, not four times
    for lease in leases[4:]:
        lease.success()  # type: ignore[union-attr]
    assert 8 < limiter.concurrency_limit < 9  # additive increase: +1/limit per success


def test_concurrency_limit_blocks_admission() -> None:
    clock = FakeClock()
    limiter = make(clock, max_concurrency=2)
    a, b = limiter.try_acquire(), limiter.try_acquire()
    assert isinstance(a, Lease) and isinstance(b, Lease)
    assert not isinstance(limiter.try_acquire(), Lease)
    a.failure()
    assert isinstance(limiter.try_acquire(), Lease)


def test_retry_after_pauses_the_whole_provider() -> None:
    clock = FakeClock()
    limiter = make(clock)
    lease = limiter.try_acquire()
    assert isinstance(lease, Lease)
    lease.rate_limited(retry_after=2.5)
    assert limiter.try_acquire() == pytest.approx(2.5)
    clock.now += 2.5
    assert isinstance(limiter.try_acquire(), Lease)


def test_breaker_opens_on_a_429_storm_then_half_opens_and_closes_on_success() -> None:
    clock = FakeClock()
    limiter = make(clock, breaker_threshold=3, breaker_base=1.0, max_concurrency=8)
    for _ in range(3):
        lease = limiter.try_acquire()
        assert isinstance(lease, Lease)
        lease.rate_limited()
    state = limiter.state()
    assert state.breaker_open and state.paused_for == pytest.approx(1.0)
    assert not isinstance(limiter.try_acquire(), Lease)  # waits: requests never fail here
    clock.now += 1.0
    probe = limiter.try_acquire()
    assert isinstance(probe, Lease)
    assert not isinstance(limiter.try_acquire(), Lease)  # half-open: one at a time
    probe.rate_limited()  # still limited: the breaker backs off longer
    assert limiter.state().paused_for == pytest.approx(2.0)
    clock.now += 2.0
    probe = limiter.try_acquire()
    assert isinstance(probe, Lease)
    probe.success()
    assert not limiter.state().breaker_open
    assert isinstance(limiter.try_acquire(), Lease) and isinstance(limiter.try_acquire(), Lease)


def test_acquire_waits_through_a_pause_instead_of_failing() -> None:
    clock = FakeClock()
    limiter = make(clock)
    first = limiter.try_acquire()
    assert isinstance(first, Lease)
    first.rate_limited(retry_after=3.0)
    lease = asyncio.run(limiter.acquire())
    assert isinstance(lease, Lease)
    assert sum(clock.slept) == pytest.approx(3.0, abs=0.01)


def test_openai_headers_lower_the_rpm_and_block_until_reset() -> None:
    clock = FakeClock()
    limiter = make(clock, rpm=1000, period=60.0, guard=0.0)
    lease = limiter.try_acquire()
    assert isinstance(lease, Lease)
    lease.success({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                   "x-ratelimit-reset-requests": "1.5s", "x-ratelimit-limit-tokens": "9000",
                   "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "6m0s"})
    state = limiter.state()
    assert state.rpm == 60 and state.tpm == 9000
    wait = limiter.try_acquire()
    assert wait == pytest.approx(1.5, abs=0.01)


def test_anthropic_headers_with_rfc3339_reset() -> None:
    clock = FakeClock()
    wall = 1_700_000_000.0
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, wall=lambda: wall, period=60.0,
                          guard=0.0)
    reset = datetime.fromtimestamp(wall, UTC) + timedelta(seconds=4)
    limiter.observe_headers({"anthropic-ratelimit-requests-limit": "50",
                             "anthropic-ratelimit-requests-remaining": "0",
                             "anthropic-ratelimit-requests-reset": reset.isoformat()})
    assert limiter.state().rpm == 50
    assert limiter.try_acquire() == pytest.approx(4.0, abs=0.01)


def test_parse_duration_and_retry_after() -> None:
    assert parse_duration("6m0s") == 360
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None
    assert parse_retry_after({"Retry-After": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
                             wall_now=1445412480.0 - 10) == pytest.approx(10)
    assert parse_retry_after({}) is None


def test_one_limiter_per_provider_and_model() -> None:
    reset_limiters()
    a = limiter_for("openai", "gpt-4o-mini", rpm=10)
    assert limiter_for("openai", "gpt-4o-mini", rpm=99) is a
    assert limiter_for("openai", "gpt-4o", rpm=10) is not a
    reset_limiters()


def test_sliding_window_counts_from_the_finish_and_in_flight_requests_always() -> None:
    window = SlidingWindow(2, period=1.0, guard=0.1)
    window.take(0.0)
    window.take(0.2)
    assert window.wait_time(5.0) == 0.05  # both in flight: only a finish can make room
    window.finish(0.5)  # the server saw it at 0.5 at the latest
    assert window.wait_time(1.0) == pytest.approx(0.6)  # 0.5 + period + guard
    assert window.wait_time(1.6) == 0
    window.finish(0.7)
    window.take(1.6)
    assert window.wait_time(1.6) == pytest.approx(0.2)


def test_a_storm_of_stale_429s_counts_once() -> None:
    clock = FakeClock()
    limiter = make(clock, max_concurrency=64, breaker_threshold=3)
    leases = [limiter.try_acquire() for _ in range(40)]
    for lease in leases:
        lease.rate_limited(retry_after=1.0)  # type: ignore[union-attr]
    state = limiter.state()
    assert state.concurrency_limit == 32 and not state.breaker_open
    assert state.paused_for == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(latencies=st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5)),
                          min_size=1, max_size=60),
       limit=st.integers(1, 8))
def test_the_server_never_sees_more_than_the_limit_whatever_the_latencies(
        latencies: list[tuple[float, float]], limit: int) -> None:
    """Each request reaches the server some time after we admit it (`up`) and answers some
    time after that (`down`); counted at the server, no window holds more than `limit`."""
    clock = FakeClock()
    limiter = make(clock, rpm=limit, period=1.0, guard=0.0, max_concurrency=1000)
    events: list[tuple[float, int, float]] = []  # (finish time, index, arrival time)
    arrivals: list[float] = []
    pending = list(enumerate(latencies))
    in_flight: dict[int, Lease] = {}
    while pending or in_flight:
        while pending:  # admit all we can now
            got = limiter.try_acquire()
            if not isinstance(got, Lease):
                break
            i, (up, down) = pending.pop(0)
            in_flight[i] = got
            events.append((clock.now + up + down, i, clock.now + up))
            events.sort()
        # advance to the next finish, or to when the limiter said to ask again
        wait = limiter.try_acquire() if pending else None
        if isinstance(wait, Lease):  # admitted meanwhile: put it back (cannot happen, but safe)
            wait.failure()
            wait = None
        next_finish = events[0][0] if events else None
        candidates = [t for t in (next_finish, clock.now + wait if wait else None) if t is not None]
        clock.now = max(clock.now, min(candidates))
        while events and events[0][0] <= clock.now:
            _, i, arrived = events.pop(0)
            arrivals.append(arrived)
            in_flight.pop(i).success()
    arrivals.sort()
    for k, t in enumerate(arrivals):
        assert sum(1 for a in arrivals[k:] if a < t + 1.0) <= limit
