"""Ctrl-C held back while a framework runs (convnet.interrupts), raised where convnet's code is."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from convnet.evaluation import predict_proba
from convnet.interrupts import Deferred


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # Python runs the handler at its next instruction in the main thread


def test_a_ctrl_c_waits_for_check_and_a_second_does_not():
    before = signal.getsignal(signal.SIGINT)
    with Deferred() as interrupt:
        interrupt.check()  # nothing came yet
        ctrl_c()
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_ctrl_c_that_no_check_saw_is_delivered_at_the_end_of_the_block():
    reached = []
    with pytest.raises(KeyboardInterrupt), Deferred():
        ctrl_c()
        reached.append("the rest of the block")
    assert reached == ["the rest of the block"]


def test_off_the_main_thread_it_changes_nothing():
    found = {}

    def run():
        with Deferred() as interrupt:
            found["handler"] = signal.getsignal(signal.SIGINT)
            interrupt.check()

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert found == {"handler": before}


class CallsBack:
    """A model whose `predict` runs Python code in the middle of its work, as TensorFlow's C++
    asks a TensorShape its length: a Ctrl-C landing there must not be raised there."""

    def __init__(self):
        self.finished = 0

    def predict(self, x, batch_size, verbose):
        ctrl_c()
        self.finished += 1
        return np.full((len(x), 3), 1 / 3, np.float32)


def test_a_ctrl_c_during_a_models_call_is_raised_once_the_call_returns():
    model = CallsBack()
    with pytest.raises(KeyboardInterrupt):
        predict_proba(model, np.zeros((4, 8, 8, 1), np.uint8))
    assert model.finished == 1
