"""The epoll Reactor: fds, timers, call_soon(_threadsafe), stop, signals, errors."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time

import pytest
from forking import in_child

from poolalloc.net.epoll.reactor import Reactor

pytestmark = pytest.mark.timeout(20)


def run_for(r: Reactor, seconds: float) -> None:
    r.call_later(seconds, r.stop)
    r.run()


def test_timers_fire_in_deadline_order(reactor: Reactor) -> None:
    out: list[str] = []
    reactor.call_later(0.03, out.append, "c")
    when = time.monotonic() + 0.01
    reactor.call_at(when, out.append, "a")
    reactor.call_later(0.02, out.append, "b")
    reactor.call_at(when, out.append, "a2")  # same deadline: creation order
    run_for(reactor, 0.06)
    assert out == ["a", "a2", "b", "c"]


def test_timer_not_early_and_cancel(reactor: Reactor) -> None:
    fired: list[float] = []
    start = time.monotonic()
    reactor.call_later(0.05, lambda: fired.append(time.monotonic() - start))
    dropped = reactor.call_later(0.01, fired.append, -1.0)
    dropped.cancel()
    run_for(reactor, 0.08)
    assert len(fired) == 1
    assert fired[0] >= 0.05


def test_many_cancelled_timers_are_compacted(reactor: Reactor) -> None:
    handles = [reactor.call_later(100 + i, print) for i in range(1000)]
    for h in handles[:900]:
        h.cancel()
    assert len(reactor._timers) < 1000  # rebuilt once more than half were cancelled
    live = [t for t in reactor._timers if not t.cancelled]
    assert len(live) == 100


def test_call_soon_runs_in_order_and_does_not_starve(reactor: Reactor) -> None:
    out: list[int] = []

    def again(i: int) -> None:
        out.append(i)
        if i < 5:
            reactor.call_soon(again, i + 1)

    reactor.call_soon(again, 0)
    reactor.call_soon(out.append, 100)
    reactor.run_once()
    assert out == [0, 100]  # the re-scheduled callback waits for the next pass
    run_for(reactor, 0.01)
    assert out == [0, 100, 1, 2, 3, 4, 5]


def test_call_soon_threadsafe_wakes_a_sleeping_loop(reactor: Reactor) -> None:
    got: list[str] = []
    reactor.call_later(10, reactor.stop)  # safety net only

    def worker() -> None:
        time.sleep(0.05)
        reactor.call_soon_threadsafe(got.append, "from thread")
        reactor.call_soon_threadsafe(reactor.stop)

    t = threading.Thread(target=worker)
    start = time.monotonic()
    t.start()
    reactor.run()
    t.join()
    assert got == ["from thread"]
    assert time.monotonic() - start < 5


def test_stop_from_another_thread(reactor: Reactor) -> None:
    t = threading.Thread(target=lambda: (time.sleep(0.05), reactor.stop()))
    t.start()
    reactor.run()  # sleeping in epoll_wait with no timers: only the eventfd can end it
    t.join()
    assert not reactor._running


@pytest.mark.parametrize("delay", [math.inf, 1e10, 3e6], ids=["inf", "1e10", "35days"])
def test_a_far_or_infinite_timer_lets_the_loop_sleep(reactor: Reactor, delay: float) -> None:
    """A deadline past what one wait takes (epoll's 2**31 - 1 ms, some 24.8 days), or
    ``math.inf``, used to make every run() raise (NaN or OverflowError) while it was pending."""
    fired: list[float] = []
    far = reactor.call_later(delay, fired.append, delay)
    beyond = reactor.call_at(reactor.time() + delay, fired.append, delay)
    for _ in range(2):  # and the loop stays usable
        # stopped from a thread: a nearer timer of ours would set the wait instead
        stopper = threading.Timer(0.05, reactor.stop)
        start = time.monotonic()
        stopper.start()
        reactor.run()
        stopper.join()
        assert 0.04 < time.monotonic() - start < 5
    assert fired == []
    assert far.when > reactor.time() + 2_000_000
    assert beyond.when >= far.when - 1
    far.cancel()
    beyond.cancel()


def test_nan_is_refused_when_scheduled(reactor: Reactor) -> None:
    """A NaN deadline has no place in the heap: refused at once, not inside run()."""
    with pytest.raises(ValueError, match="NaN"):
        reactor.call_later(math.nan, print)
    with pytest.raises(ValueError, match="NaN"):
        reactor.call_at(math.nan, print)
    with pytest.raises(TypeError):
        reactor.call_at("1", print)  # type: ignore[arg-type]
    assert reactor._timers == []
    run_for(reactor, 0.01)  # nothing was left behind to poison the loop


def test_stop_before_run_makes_one_pass(reactor: Reactor) -> None:
    """As asyncio's run_forever: a stop() that lands before run() is not lost; run() makes
    one pass without sleeping and returns. A stop() of one run does not end the next."""
    ran: list[str] = []
    late = reactor.call_later(3, ran.append, "late")
    reactor.call_soon(ran.append, "soon")
    reactor.stop()
    start = time.monotonic()
    reactor.run()
    assert time.monotonic() - start < 1
    assert ran == ["soon"]
    late.cancel()

    t = threading.Thread(target=reactor.stop)  # from another thread, before run()
    t.start()
    t.join()
    start = time.monotonic()
    reactor.run()
    assert time.monotonic() - start < 1

    reactor.call_soon(reactor.stop)
    reactor.call_soon(reactor.stop)  # twice in one run: still only that run
    reactor.run()
    start = time.monotonic()
    run_for(reactor, 0.1)
    assert time.monotonic() - start >= 0.09


def test_a_closed_reactor_refuses_work(reactor: Reactor) -> None:
    """Scheduling or registering on a closed loop raises, as asyncio's 'Event loop is closed':
    the handles it returned used to be dropped silently."""
    a, b = socket.socketpair()
    reactor.close()
    try:
        calls = {
            "call_soon": lambda: reactor.call_soon(print),
            "call_soon_threadsafe": lambda: reactor.call_soon_threadsafe(print),
            "call_later": lambda: reactor.call_later(0, print),
            "call_at": lambda: reactor.call_at(0, print),
            "register": lambda: reactor.register(a.fileno(), print, None),
            "add_signal_handler": lambda: reactor.add_signal_handler(signal.SIGUSR1, print),
            "run": reactor.run,
            "run_once": reactor.run_once,  # was a ValueError from the closed epoll object
        }
        for call in calls.values():
            with pytest.raises(RuntimeError, match=f"^{type(reactor).__name__} is closed$"):
                call()
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        reactor.stop()  # a no-op, as in asyncio; the eventfd it would write is gone
    finally:
        a.close()
        b.close()


def test_readable_and_writable_callbacks(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    events: list[str] = []
    reactor.register(a.fileno(), lambda: events.append("r"), lambda: events.append("w"))
    reactor.run_once()  # a fresh socket is writable: one edge
    assert events == ["w"]
    b.send(b"x")
    reactor.run_once()
    assert "r" in events
    reactor.modify(a.fileno(), None, None)  # no epoll_ctl: the callbacks just go away
    b.send(b"y")
    events.clear()
    reactor.call_later(0.02, lambda: None)
    reactor.run_once()
    assert events == []
    reactor.unregister(a.fileno())
    assert not reactor.is_registered(a.fileno())
    with pytest.raises(KeyError):
        reactor.modify(a.fileno(), None, None)
    a.close()
    b.close()


def test_register_twice_and_regular_file(reactor: Reactor, tmp_path: object) -> None:
    a, b = socket.socketpair()
    reactor.register(a.fileno(), None, None)
    with pytest.raises(FileExistsError):
        reactor.register(a.fileno(), None, None)
    with open(__file__, "rb") as f, pytest.raises(PermissionError):
        reactor.register(f.fileno(), None, None)  # epoll refuses regular files
    reactor.unregister(a.fileno())
    a.close()
    b.close()


def test_hangup_wakes_reader(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    seen: list[bytes] = []
    reactor.register(a.fileno(), lambda: seen.append(a.recv(10)), None)
    b.close()
    reactor.run_once()
    assert seen == [b""]
    reactor.unregister(a.fileno())
    a.close()


def test_callback_exception_is_reported_and_loop_continues() -> None:
    errors: list[BaseException] = []
    with Reactor(exception_handler=lambda exc, where: errors.append(exc)) as r:
        out: list[int] = []
        r.call_soon(lambda: 1 / 0)
        r.call_soon(out.append, 1)
        run_for(r, 0.01)
        assert out == [1]
        assert isinstance(errors[0], ZeroDivisionError)
        assert r.stats["errors"] == 1


def test_signals_are_delivered_without_loss(reactor: Reactor) -> None:
    got: list[int] = []
    reactor.add_signal_handler(signal.SIGUSR1, got.append, signal.SIGUSR1)
    reactor.add_signal_handler(signal.SIGUSR2, got.append, signal.SIGUSR2)

    def fire() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)

    reactor.call_later(0.01, fire)
    reactor.call_later(0.2, reactor.stop)
    reactor.run()
    assert sorted(got) == sorted([signal.SIGUSR1, signal.SIGUSR2])
    assert reactor.remove_signal_handler(signal.SIGUSR1)
    assert not reactor.remove_signal_handler(signal.SIGUSR1)


def test_signal_wakes_a_sleeping_loop(reactor: Reactor) -> None:
    reactor.add_signal_handler(signal.SIGUSR1, reactor.stop)
    t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    t.start()
    start = time.monotonic()
    reactor.run()  # no timers: only the wakeup fd can end the wait
    t.join()
    assert time.monotonic() - start < 5


def test_close_rules() -> None:
    r = Reactor()
    refused: list[str] = []

    def close_while_running() -> None:
        try:
            r.close()
        except RuntimeError as exc:
            refused.append(str(exc))

    r.call_soon(close_while_running)
    r.call_soon(r.stop)
    r.run()
    assert refused == ["cannot close a running reactor"]
    r.close()
    r.close()  # idempotent
    assert r.closed
    with pytest.raises(RuntimeError):
        r.run()


def test_a_cut_pass_repeats_the_interrupted_callback_only_while_its_fd_is_ready() -> None:
    """The callback a KeyboardInterrupt cut short is called again by the next pass only if its
    fd is still ready: a user's callback need not cope with a readiness that is gone (it may
    read blocking)."""
    r = Reactor()
    rfd, wfd = os.pipe()
    calls: list[bytes] = []

    def read_one_then_interrupt() -> None:
        calls.append(os.read(rfd, 1))  # one byte per call: what is left keeps the fd ready
        raise KeyboardInterrupt

    try:
        r.register(rfd, read_one_then_interrupt, None)
        os.write(wfd, b"ab")
        with pytest.raises(KeyboardInterrupt):
            r.run_once()
        with pytest.raises(KeyboardInterrupt):
            r.run_once()  # still ready ("b" waits): called again
        assert calls == [b"a", b"b"]
        r.call_later(0.01, lambda: None)
        r.run_once()  # nothing left: not called (a blocking read would wait for good)
        assert calls == [b"a", b"b"]
        r.unregister(rfd)
    finally:
        os.close(rfd)
        os.close(wfd)
        r.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_keeps_off_the_parents_epoll_set(reactor: Reactor) -> None:
    """The child's epoll fd is the parent's very set. Before, a child closing what it
    inherited (a server's ``close`` unregisters its listener) deleted the parent's
    registration, so the parent never heard of that fd again; and a child could run the
    parent's loop and take its events. Now the child's unregister leaves the set alone, and
    ``run`` and ``register`` in the child raise, as the Proactor's ``run`` does."""
    a, b = socket.socketpair()
    seen: list[str] = []
    reactor.register(a.fileno(), lambda: seen.append(a.recv(16).decode()), None)
    pid = os.fork()
    if pid == 0:  # the child: its status says what it found
        code = 9
        try:
            reactor.unregister(a.fileno())
            reactor.call_soon(reactor.stop)  # a run that is let through ends after one pass
            try:
                reactor.run()
            except RuntimeError as exc:
                code = 0 if "fork" in str(exc) else 2
            else:
                code = 3
            c, _ = socket.socketpair()
            try:
                reactor.register(c.fileno(), print, None)
            except RuntimeError:
                pass
            else:
                code = code or 4
            reactor.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        b.sendall(b"hello")
        run_for(reactor, 0.05)
        assert seen == ["hello"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_call_soon_threadsafe_racing_close_never_writes_into_a_reused_fd(engine: str) -> None:
    """A thread's ``call_soon_threadsafe`` that races the loop's ``close`` either schedules
    (before it) or raises ``RuntimeError`` (after it). Before, the thread could check the loop
    open, lose the processor to ``close``, and write its wakeup into whatever file took the
    closed eventfd's number (a pipe here; a client's socket in a server): half the trials on
    epoll; the Proactor raised ``OSError(EBADF)``."""
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor, available

        if not available()[0]:
            pytest.skip("io_uring unavailable")
    stray: list[bytes] = []
    other: list[BaseException] = []
    for _ in range(100):
        loop = Reactor() if engine == "epoll" else Proactor()

        def hammer(loop: Reactor = loop) -> None:
            while True:
                try:
                    loop.call_soon_threadsafe(lambda: None)
                except RuntimeError:
                    return
                except Exception as exc:
                    other.append(exc)
                    return

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.0005)
        loop.close()
        r, w = os.pipe()  # takes the closed eventfd's number, or a number near it
        thread.join(5)
        os.set_blocking(r, False)
        with contextlib.suppress(BlockingIOError):
            stray.append(os.read(r, 64))
        os.close(r)
        os.close(w)
    assert (stray, other) == ([], [])


def test_removing_a_signal_handler_restores_the_one_before(reactor: Reactor) -> None:
    """``remove_signal_handler`` (and ``close``) put back what the signal did before the loop
    took it. Before, it was ``SIG_DFL``: after a loop that handled SIGINT closed, Ctrl-C killed
    the process on the spot instead of raising ``KeyboardInterrupt`` (no ``finally`` ran)."""
    before = signal.getsignal(signal.SIGINT)
    mine: list[int] = []

    def handler(signum: int, frame: object) -> None:
        mine.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        reactor.add_signal_handler(signal.SIGINT, print)
        reactor.add_signal_handler(signal.SIGUSR1, print)
        reactor.add_signal_handler(signal.SIGUSR1, print)  # replaced: the first "before" stays
        assert reactor.remove_signal_handler(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is handler  # SIG_DFL would end the process
        signal.raise_signal(signal.SIGUSR1)
        assert mine == [signal.SIGUSR1]
        reactor.close()
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.signal(signal.SIGINT, before)


def test_two_loops_with_signal_handlers_close_in_any_order() -> None:
    """Each loop with signal handlers makes its socket the process's wakeup fd, keeping the
    one it replaced. Closing the older loop first used to reset the wakeup fd while the newer
    one ran on (its signals never reached it), and the newer one's close then put back the
    older's closed fd: ``OSError(EBADF)`` halfway through ``close``, or, had the number been
    taken meanwhile, signal bytes written into another file."""
    start = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(start)
    got: list[str] = []
    a = Reactor()
    a.add_signal_handler(signal.SIGUSR1, got.append, "a")
    b = Reactor()
    b.add_signal_handler(signal.SIGUSR2, lambda: (got.append("b"), b.stop()))
    try:
        a.close()
        b.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
        guard = b.call_later(2.0, b.stop)
        b.run()
        guard.cancel()
        assert got == ["b"]
    finally:
        b.close()
    now = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(now)
    assert now == start


def test_a_signal_handler_may_stop_the_loop_while_its_thread_wakes_it() -> None:
    """A Python signal handler runs in the main thread between two bytecodes, possibly while
    that thread is inside ``call_soon_threadsafe`` or ``stop`` holding the wakeup lock; a
    handler that calls ``stop()`` (the usual one) then waited on the lock its own thread held.
    Run in a child, so that a hang is a kill and not a stuck suite."""

    def in_the_lock() -> None:
        loop = Reactor()
        signal.signal(signal.SIGUSR1, lambda *_: loop.stop())
        with loop._wakeup_lock:  # as a wakeup under way holds it when the signal comes
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)  # the handler runs here, at the next bytecode
        loop.close()

    assert in_child(in_the_lock, limit=5.0) == 0  # not killed as hung


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_forked_child_closes_a_loop_whose_wakeup_another_thread_was_writing(
    engine: str,
) -> None:
    """A thread of the parent in the middle of ``call_soon_threadsafe`` (or ``stop``) holds the
    loop's wakeup lock when another thread forks; the child has no such thread to let go of it.
    Closing what the child inherited (as the guide says it may) then waited on that lock for
    good; now the child's copy of each loop starts with a free one."""
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor, available

        if not available()[0]:
            pytest.skip("io_uring unavailable")
    loop = Reactor() if engine == "epoll" else Proactor()
    held, done = threading.Event(), threading.Event()

    def mid_wakeup() -> None:  # holds the lock as a wakeup under way does, across the fork
        with loop._wakeup_lock:
            held.set()
            done.wait(10)

    thread = threading.Thread(target=mid_wakeup)
    thread.start()
    try:
        assert held.wait(5)

        def close_in_child() -> None:
            loop.call_soon_threadsafe(print)
            loop.close()

        assert in_child(close_in_child, limit=5.0) == 0  # not killed as hung
    finally:
        done.set()
        thread.join(5)
        loop.close()
