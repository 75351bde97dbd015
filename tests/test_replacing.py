"""A replaced task sends task-replaced (Flower: state REPLACED, counted per worker) when task events are on."""

from unittest import mock

import pytest
from celery import Celery
from celery.exceptions import Ignore

from carcelery.replacing import REPLACED, Replaceable


def replaced(events: bool, eager: bool = False) -> list:
    """The events a Replaceable task sends when it is replaced by a task named ``t.second``."""
    app = Celery("t", set_as_current=False)
    app.conf.worker_send_task_events = events

    @app.task(bind=True, base=Replaceable, name="t.first", shared=False)
    def first(self):
        pass

    sent = []
    first.send_event = lambda type_, **fields: sent.append((type_, fields))
    sig = mock.Mock()
    sig.name = "t.second"
    first.push_request(id="abc", hostname="a@host", is_eager=eager)
    try:
        if eager:
            first.on_replace(sig)
        else:
            with pytest.raises(Ignore):  # Celery's: the task ends, acknowledged, with no state stored
                first.on_replace(sig)
            sig.delay.assert_called_once_with()
    finally:
        first.pop_request()
    return sent


def test_a_replaced_task_sends_task_replaced_naming_its_replacement():
    assert replaced(events=True) == [(REPLACED, {"retry": False, "replaced_by": "t.second"})]


def test_no_event_when_the_worker_sends_no_task_events():
    assert replaced(events=False) == []


def test_no_event_when_run_eagerly():
    # Eager, the replacement runs in place and its result is the task's: nothing was handed on.
    assert replaced(events=True, eager=True) == []
