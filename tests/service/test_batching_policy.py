"""The batching policy's decisions, on a fake clock: when a request runs inline, when the
batcher is under load, and until when a partial batch is held open.

No threads and no sleeps: each test moves the clock and checks the decision exactly. (The
batcher acting on these decisions is tested in test_batching.py.)
"""

from dataclasses import replace

from service.batching import BatchPolicy, BatchPolicySettings
from tests.fake_clock import FakeClock

# Halves and quarters, so that every instant below is exact in binary floating point.
SETTINGS = BatchPolicySettings(
    max_delay_seconds=0.5, pause_fraction=0.25, load_weight=0.5, load_threshold=0.5,
    inline_max_rows=16, group_memory=8, always_wait_every=8,
)
PAUSE = 0.125  # pause_fraction of max_delay_seconds
START = 1000.0


def alone(policy: BatchPolicy, rows: int = 1) -> bool:
    """An arrival that finds the server otherwise idle; whether it runs inline."""
    return policy.arrive(rows, worker_busy=False, queued_requests=0, calls_in_flight=1)


def with_company(policy: BatchPolicy, queued_requests: int = 1) -> bool:
    """An arrival that finds other requests queued; whether it runs inline."""
    return policy.arrive(1, worker_busy=False, queued_requests=queued_requests,
                         calls_in_flight=queued_requests + 1)


def loaded_policy(settings: BatchPolicySettings = SETTINGS) -> tuple[BatchPolicy, FakeClock]:
    """A policy whose arrivals have long found company, on a clock at START."""
    clock = FakeClock(START)
    policy = BatchPolicy(settings, clock)
    for _ in range(20):
        with_company(policy)
    assert policy.under_load
    return policy, clock


def test_a_small_request_that_finds_the_server_idle_runs_inline() -> None:
    policy = BatchPolicy(SETTINGS, FakeClock(START))
    assert alone(policy, rows=1)
    assert alone(policy, rows=16)
    assert not alone(policy, rows=17)  # larger than inline_max_rows: to the worker


def test_any_company_sends_a_request_to_the_worker() -> None:
    policy = BatchPolicy(SETTINGS, FakeClock(START))
    assert not policy.arrive(1, worker_busy=True, queued_requests=0, calls_in_flight=1)
    assert not policy.arrive(1, worker_busy=False, queued_requests=1, calls_in_flight=1)
    assert not policy.arrive(1, worker_busy=False, queued_requests=0, calls_in_flight=2)


def test_under_load_a_lone_arrival_does_not_run_inline_unless_batches_never_wait() -> None:
    # A lone arrival moves the load a quarter of the way down: still under load.
    settings = replace(SETTINGS, load_weight=0.25)
    policy, _ = loaded_policy(settings)
    assert not alone(policy)  # it goes to the worker, where it may be held for company
    assert policy.under_load

    never_waits, _ = loaded_policy(replace(settings, max_delay_seconds=0.0))
    assert alone(never_waits)


def test_the_load_average_rises_with_arrivals_that_find_company_and_falls_with_lone_ones() -> None:
    policy = BatchPolicy(SETTINGS, FakeClock(START))
    with_company(policy)  # load 0.5: not above the threshold
    assert not policy.under_load
    with_company(policy)  # 0.75
    assert policy.under_load
    alone(policy)  # 0.375
    assert not policy.under_load


def test_a_lone_caller_sending_one_request_after_another_never_loads_the_batcher() -> None:
    policy = BatchPolicy(SETTINGS, FakeClock(START))
    assert all(alone(policy) for _ in range(100))
    assert not policy.under_load


def test_without_load_a_partial_batch_goes_at_once() -> None:
    policy = BatchPolicy(SETTINGS, FakeClock(START))
    with_company(policy)
    assert policy.hold_until(queued_requests=1, oldest_arrival=START, calls_in_flight=2) is None


def test_under_load_a_held_batch_goes_at_most_max_delay_after_its_oldest_request() -> None:
    policy, clock = loaded_policy()
    for _ in range(8):  # arrivals keep coming, never pausing for PAUSE
        with_company(policy)
        clock.advance(PAUSE / 2)
    hold_until = policy.hold_until(queued_requests=8, oldest_arrival=START, calls_in_flight=9)
    assert hold_until == START + SETTINGS.max_delay_seconds


def test_under_load_a_held_batch_goes_early_once_arrivals_pause() -> None:
    policy, clock = loaded_policy()
    with_company(policy)
    clock.advance(PAUSE / 2)
    with_company(policy)
    hold_until = policy.hold_until(queued_requests=2, oldest_arrival=START, calls_in_flight=3)
    assert hold_until == START + PAUSE / 2 + PAUSE


def test_a_held_batch_goes_at_once_when_its_group_of_callers_is_back() -> None:
    policy, _ = loaded_policy()
    policy.batch_formed(20, waited=True)  # the group's size: 20

    def hold(queued: int, in_flight: int) -> float | None:
        return policy.hold_until(
            queued_requests=queued, oldest_arrival=START, calls_in_flight=in_flight
        )

    assert hold(queued=20, in_flight=20) is None
    assert hold(queued=20, in_flight=21) is not None  # a call not back yet
    assert hold(queued=10, in_flight=10) is not None  # smaller than the group


def test_the_group_is_the_largest_of_the_last_batches_that_waited() -> None:
    policy, _ = loaded_policy(replace(SETTINGS, group_memory=2))
    policy.batch_formed(20, waited=True)
    policy.batch_formed(10, waited=True)
    policy.batch_formed(30, waited=False)  # a batch that did not wait says nothing
    hold = policy.hold_until(queued_requests=10, oldest_arrival=START, calls_in_flight=10)
    assert hold is not None  # 20 is still remembered
    policy.batch_formed(10, waited=True)
    assert policy.hold_until(queued_requests=10, oldest_arrival=START, calls_in_flight=10) is None


def test_one_batch_in_always_wait_every_waits_so_a_larger_group_is_seen() -> None:
    policy, _ = loaded_policy()

    def hold() -> float | None:
        return policy.hold_until(queued_requests=20, oldest_arrival=START, calls_in_flight=20)

    policy.batch_formed(20, waited=True)  # batch 1: the group is 20
    for _ in range(6):  # batches 2 to 7 go as soon as the group is back
        assert hold() is None
        policy.batch_formed(20, waited=False)
    assert hold() is None  # batch 8
    policy.batch_formed(20, waited=False)
    assert hold() is not None  # batch 9 waits, and finds the group has grown
    policy.batch_formed(25, waited=True)
    assert hold() is not None  # 20 back are no longer the whole group
