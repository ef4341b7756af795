"""feedback.periodic.Periodic: the app's background loops survive a failing round and stop on close."""

from __future__ import annotations

import logging
import threading

import pytest

from feedback.periodic import Periodic


def test_a_failing_round_is_logged_and_the_next_one_runs(caplog):
    rounds, third = [], threading.Event()

    def work():
        rounds.append(len(rounds) + 1)
        if len(rounds) == 1:
            raise OSError("storage down")
        if len(rounds) == 3:
            third.set()

    loop = Periodic("test-loop", work, 0.01, first_now=True)
    with caplog.at_level(logging.ERROR, logger="catdog.feedback"):
        loop.start()
        assert third.wait(5), rounds
        loop.close()
    assert not loop.running
    assert "test-loop: this round failed" in caplog.text and "OSError: storage down" in caplog.text
    count = len(rounds)
    threading.Event().wait(0.05)
    assert len(rounds) == count  # closed: no more rounds


def test_first_now_runs_at_start_otherwise_after_one_interval():
    ran = threading.Event()
    now = Periodic("now", ran.set, 60, first_now=True)
    now.start()
    assert ran.wait(5)
    now.close()
    later_ran = threading.Event()
    later = Periodic("later", later_ran.set, 60)
    later.start()
    assert not later_ran.wait(0.2)
    later.close(timeout_s=5)  # close does not wait for the interval
    assert not later.running and not later_ran.is_set()


def test_misuse_is_named():
    with pytest.raises(ValueError, match="x: the interval must be positive"):
        Periodic("x", lambda: None, 0)
    loop = Periodic("y", lambda: None, 60)
    loop.start()
    with pytest.raises(RuntimeError, match="y is started already"):
        loop.start()
    loop.close()
