"""Native calls side by side (furpe.core.threads) and the thread-safe stderr silencer."""
from __future__ import annotations

import os
import threading

import pytest

from furpe.core import logs
from furpe.core.lookahead import Lookahead
from furpe.core.threads import background, one_core, own_thread, side_by_side


def test_side_by_side_runs_both_at_once() -> None:
    """Each call waits for the other at a barrier: only calls that run at the same time pass
    it (one after the other, the first would time out)."""
    barrier = threading.Barrier(2, timeout=10)
    names: list[str] = []

    def call(name: str) -> str:
        barrier.wait()
        names.append(threading.current_thread().name)
        return name

    assert side_by_side(lambda: call("a"), lambda: call("b")) == ("a", "b")
    assert len(set(names)) == 2


def test_side_by_side_waits_for_both_and_raises_the_error() -> None:
    done = threading.Event()

    def slow() -> None:
        done.wait(0.2)
        done.set()

    def fails() -> None:
        raise ValueError("broken input")

    with pytest.raises(ValueError, match="broken input"):
        side_by_side(fails, slow)
    assert done.is_set()  # the other call had finished before the error came out
    assert background(lambda x: x + 1, 1).result() == 2


def test_native_quiet_restores_stderr_when_threads_leave_out_of_order() -> None:
    """Thread A enters, thread B enters, A leaves, B leaves: descriptor 2 ends as it began
    (saved and restored per call, B would put back A's sink) and writes in between vanish."""
    before = os.fstat(2)
    silenced: list[bool] = []
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with logs.native_quiet():
            a_in.set()
            b_in.wait(5)
            os.write(2, b"native noise from A\n")
        a_out.set()

    def second() -> None:
        a_in.wait(5)
        with logs.native_quiet():
            b_in.set()
            a_out.wait(5)
            silenced.append(os.fstat(2).st_ino != before.st_ino)  # still, after A left
            os.write(2, b"native noise from B\n")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert silenced == [True]
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_one_core_runs_the_calls_in_the_calling_thread() -> None:
    """Inside one_core (the look-ahead's expert runs, beside the fit) both calls run in the
    caller's thread, one after the other; outside, the second runs in a helper thread."""
    def where() -> str:
        return threading.current_thread().name

    with one_core():
        a, b = side_by_side(where, where)
    assert a == b == threading.current_thread().name
    a, b = side_by_side(where, where)
    assert a != b


def test_lookahead_runs_submitted_experts_on_one_core() -> None:
    """A prefetched image's experts run with their native calls one after the other (the fit
    holds the other core); a call the caller waits for may use both."""
    def threads_used(_image: object) -> int:
        mine = threading.current_thread().name
        return len({mine, *side_by_side(lambda: threading.current_thread().name,
                                        lambda: threading.current_thread().name)})

    ahead = Lookahead()
    try:
        image = object()
        ahead.submit("experts", image, threads_used, image)
        assert ahead.take("experts", image, threads_used, image)[0] == 1
        other = object()
        assert ahead.take("experts", other, threads_used, other)[0] == 2
    finally:
        ahead.close()


def test_own_thread_runs_in_a_thread_that_ends_with_the_call() -> None:
    """A pooled thread that ran torch keeps its OpenMP team, which slowed the caller's
    multi-threaded torch operations afterwards (more OpenMP threads than cores)."""
    ran_in: list[threading.Thread] = []
    caller = threading.current_thread()

    def work(x: int) -> int:
        ran_in.append(threading.current_thread())
        return 2 * x

    assert own_thread(work, 21).result() == 42
    assert ran_in[0] is not caller and ran_in[0].name == "furpe-job"
    ran_in[0].join(5)
    assert not ran_in[0].is_alive()

    def broken() -> None:
        raise ValueError("expert failed")

    with pytest.raises(ValueError, match="expert failed"):
        own_thread(broken).result()
