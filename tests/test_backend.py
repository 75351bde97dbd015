import json
import os
import uuid
from types import SimpleNamespace

from celery import states
from celery.backends.base import BaseKeyValueStoreBackend

from carcelery import app
from carcelery.backend import OncePerPartDynamoDBBackend


def test_a_chord_part_reported_twice_counts_once(emulator):
    backend = app.backend
    assert isinstance(backend, OncePerPartDynamoDBBackend)
    key = backend.get_key_for_chord(uuid.uuid4().hex)
    with backend.counting("task-1"):
        assert backend.incr(key) == 1
    with backend.counting("task-1"):  # redelivered, ran again
        assert backend.incr(key) == 1
    with backend.counting("task-2"):
        assert backend.incr(key) == 2
    backend.delete(key)
    with backend.counting("task-2"):
        assert backend.incr(key) == 1, "delete removes the whole counter"


def test_only_the_last_part_completes_the_chord(emulator, monkeypatch):
    # Parts may report before the dispatcher has stored the chord's size, and
    # any part may report twice; only the last one goes on to Celery's code,
    # which joins the results and sends the terminator.
    backend = app.backend
    completing = []
    monkeypatch.setattr(BaseKeyValueStoreBackend, "on_chord_part_return",
                        lambda self, request, *args, **kwargs: completing.append(request.id))
    group = uuid.uuid4().hex

    def report(task_id):
        backend.on_chord_part_return(SimpleNamespace(group=group, id=task_id), states.SUCCESS, {})

    waiting = uuid.uuid4().hex
    backend.set_chord_size(waiting, 3)
    assert backend.parts_done(waiting) == 0, "a size stored, no part reported yet"
    report("task-1")  # before the size is stored
    backend.set_chord_size(group, 3)
    report("task-2")
    report("task-2")  # redelivered, ran again
    report("task-1")
    assert completing == [] and backend.parts_done(group) == 2
    report("task-3")
    assert completing == ["task-3"]
    report("task-3")  # its first run may have died before sending the terminator
    assert completing == ["task-3", "task-3"]


def test_a_stored_success_is_not_overwritten(emulator):
    # A task delivered twice may run twice: its second outcome must not replace a success.
    backend = app.backend
    task_id = uuid.uuid4().hex
    backend.store_result(task_id, {"n": 1}, states.STARTED)
    backend.store_result(task_id, {"n": 2}, states.SUCCESS)
    assert backend.get_task_meta(task_id, cache=False)["result"] == {"n": 2}
    backend.store_result(task_id, None, states.FAILURE, traceback="worker lost")
    backend.store_result(task_id, {"n": 3}, states.SUCCESS)
    meta = backend.get_task_meta(task_id, cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"n": 2})


def test_a_forked_process_makes_its_own_clients(emulator):
    # Worker processes are forked from the worker's main process. Connections are
    # kept alive, so a client shared across the fork would carry two processes'
    # requests on one connection, and each could read the other's response.
    from carcelery import aws

    backend = app.backend
    task_id = uuid.uuid4().hex
    backend.store_result(task_id, {"n": 1}, states.SUCCESS)
    inherited = (backend.client, aws.client("s3"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            ours = (backend.client, aws.client("s3"))
            works = backend.get_task_meta(task_id, cache=False)["result"] == {"n": 1}
            os.write(write, json.dumps({"shared": [a is b for a, b in zip(ours, inherited)], "works": works}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    assert child == {"shared": [False, False], "works": True}
    assert backend.client is inherited[0] and aws.client("s3") is inherited[1], "the parent keeps its own"
