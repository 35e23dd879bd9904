"""Ctrl-C during placement: stop every CP-SAT search promptly and cleanly, then raise.

Left to itself CP-SAT takes SIGINT over (`catch_sigint_signal`): a Ctrl-C then ends the search
as if its time had run out, so the compile goes on and writes a bundle with a different
placement, and CP-SAT leaves the C default handler behind, so the next Ctrl-C kills the process
without a word (or, in the middle of a solve, corrupts the heap). cpsat.py turns that off and
keeps Python's KeyboardInterrupt.

Python runs signal handlers in the main thread only, between bytecodes, never while that
thread is inside a solve. So the main thread never solves itself: it waits for the threads
that do, and on KeyboardInterrupt it stops every running search (`StopSearch` is thread-safe),
waits until their threads have ended and re-raises. A search that was stopped raises
KeyboardInterrupt in its own thread too: its early layout is not a result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

POLL = 0.05  # seconds the main thread waits between looks at the solves (and at Ctrl-C)

_lock = threading.Lock()
_running: set = set()  # solvers inside Solve right now
_stopping = threading.Event()  # set from a Ctrl-C until every search has ended


def solve(solver, model) -> int:
    """`solver.Solve(model)`, stopped by Ctrl-C (which then raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return _solve(solver, model)
    outcome: dict = {}
    # not Thread.join: on Python 3.11 a join that a Ctrl-C interrupts can mark the thread as
    # ended while it still runs (CPython gh-90882), and the exit then kills the solver mid-search
    ended = threading.Event()

    def work() -> None:
        try:
            outcome["status"] = _solve(solver, model)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting main thread
            outcome["error"] = e
        finally:
            ended.set()

    thread = threading.Thread(target=work, name="cp-sat")
    _wait(thread.start, lambda: ended.wait(POLL) and not thread.is_alive())
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]


def run_all(fn: Callable, items: list, workers: int) -> list:
    """`[fn(i) for i in items]` on `workers` threads; Ctrl-C stops them and raises.

    Not a ThreadPoolExecutor: its exit joins the workers, and a Ctrl-C landing in that join
    left a worker running after the compile had stopped."""
    results: list = [None] * len(items)
    todo, errors = list(enumerate(items))[::-1], []
    lock, changed = threading.Lock(), threading.Event()

    def work() -> None:
        try:
            while True:
                with lock:
                    if not todo or errors:
                        return
                    i, item = todo.pop()
                try:
                    results[i] = fn(item)
                except BaseException as e:  # noqa: BLE001 - raised by the waiting main thread
                    with lock:
                        errors.append(e)
        finally:
            changed.set()

    threads = [threading.Thread(target=work, name=f"cp-sat-{n}") for n in range(workers)]

    def start() -> None:
        for t in threads:
            t.start()

    def finished() -> bool:
        changed.wait(POLL)
        changed.clear()
        return not any(t.is_alive() for t in threads)

    _wait(start, finished)
    if errors:
        raise errors[0]
    return results


def _wait(start: Callable[[], None], finished: Callable[[], bool]) -> None:
    """`start()`, then poll `finished()` (which may block up to POLL seconds) until it is
    true; on KeyboardInterrupt, stop every search, wait for them all, and re-raise."""
    try:
        start()
        while not finished():
            pass
    except KeyboardInterrupt:
        _stop_all(finished)
        raise


def _solve(solver, model) -> int:
    with _lock:
        if _stopping.is_set():
            raise KeyboardInterrupt
        _running.add(solver)
    try:
        status = solver.Solve(model)
    finally:
        with _lock:
            _running.discard(solver)
    if _stopping.is_set():
        raise KeyboardInterrupt
    return status


def _stop_all(finished: Callable[[], bool]) -> None:
    _stopping.set()
    try:
        while True:
            with _lock:
                solvers = list(_running)
            # again on every round: a search that was just starting may have missed a stop
            for s in solvers:
                s.StopSearch()
            try:
                if finished():
                    return
            except KeyboardInterrupt:
                pass  # another Ctrl-C: we are stopping already
    finally:
        _stopping.clear()
