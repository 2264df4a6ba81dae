"""The answer a waiting caller gets is bounded by the function's time: the send's tries (on a scripted
clock), a real listener that never answers or answers garbage, and the guard's answer in flight."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from premigrate.triggers.answering import GUARD_MARGIN_SECONDS, TRY_TIMEOUT_SECONDS, send_within, timeout_guard
from premigrate.triggers.cfn_response import Responder


def hanging_tries(clock, time_left_at_start: float):
    """A send whose every try hangs for its whole timeout, on the scripted clock."""
    end = clock.now + time_left_at_start
    timeouts: list[float] = []

    def try_once(timeout: float) -> str:
        timeouts.append(timeout)
        clock.advance(timeout)
        return "TimeoutError"

    return try_once, (lambda: end - clock.now), timeouts


@pytest.mark.parametrize("time_left", [15.0, 3.0, 0.5])
def test_the_send_never_outlasts_the_function(clock, time_left) -> None:
    try_once, left, timeouts = hanging_tries(clock, time_left)
    started = clock.now
    assert send_within(try_once, left, sleep=clock.sleep) is False
    assert clock.now - started <= max(time_left - 1.0, 0.0)  # a second is kept for the handler's return
    assert all(0 < timeout <= TRY_TIMEOUT_SECONDS for timeout in timeouts)
    assert len(timeouts) == {15.0: 3, 3.0: 1, 0.5: 0}[time_left]


def test_the_guard_leaves_time_for_more_than_one_try() -> None:
    assert GUARD_MARGIN_SECONDS > 2 * TRY_TIMEOUT_SECONDS


def test_a_send_that_fails_quickly_is_tried_four_times(clock) -> None:
    problems: list[tuple[int, str]] = []
    sent = send_within(
        lambda timeout: "HTTP 503", lambda: 600.0, sleep=clock.sleep, on_failure=lambda *p: problems.append(p)
    )
    assert sent is False
    assert problems == [(1, "HTTP 503"), (2, "HTTP 503"), (3, "HTTP 503"), (4, "HTTP 503")]
    assert clock.slept == 0.5 + 1.0 + 2.0


def listener(reply: bytes | None) -> Iterator[str]:
    """A local HTTP listener that reads each request and sends ``reply`` (None: never answers)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    connections: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connections.append(connection)
            connection.settimeout(10)
            try:
                connection.recv(65536)
                if reply is not None:
                    connection.sendall(reply)
                    connection.close()
            except OSError:  # the test is over and closed the connection
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/response"
    stop.set()
    for connection in connections:
        connection.close()
    thread.join(timeout=5)
    server.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    yield from listener(None)


@pytest.fixture
def garbled_url() -> Iterator[str]:
    yield from listener(b"HELLO THERE\r\n\r\n")


def responder_for(url: str, seconds: float) -> Responder:
    deadline = time.monotonic() + seconds
    event = {"ResponseURL": url, "StackId": "s", "RequestId": "r", "LogicalResourceId": "l"}
    return Responder(event, "premigrate-1", lambda: deadline - time.monotonic())


def test_a_response_url_that_never_answers_costs_at_most_the_time_left(silent_url) -> None:
    started = time.monotonic()
    responder_for(silent_url, 2.5).fail("boom")
    assert time.monotonic() - started < 2.5


def test_a_garbled_http_answer_is_tried_again(garbled_url, caplog) -> None:
    responder_for(garbled_url, 30.0).fail("boom")
    tries = [record.__dict__.get("problem") for record in caplog.records if "failed" in record.message]
    assert tries == ["BadStatusLine"] * 4


def test_the_handler_waits_for_the_guards_answer_in_flight() -> None:
    started, finished = threading.Event(), threading.Event()

    def answer_failed() -> None:
        started.set()
        time.sleep(0.3)  # the PUT on its way
        finished.set()

    with timeout_guard(lambda: GUARD_MARGIN_SECONDS, answer_failed):  # the guard fires at once
        assert started.wait(timeout=5)
    assert finished.is_set()  # the handler returned only once the answer was sent
