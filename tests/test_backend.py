import json
import os
import uuid
from types import SimpleNamespace

from celery import states

from carcelery import app
from carcelery import backend as backend_module
from carcelery.backend import OncePerPartDynamoDBBackend


def test_only_the_last_part_completes_the_chord(emulator, monkeypatch):
    # Parts may report before the dispatcher has stored the chord's size, and
    # any part may report twice; only the last one sends the callback.
    backend = app.backend
    assert isinstance(backend, OncePerPartDynamoDBBackend)
    sent = []
    monkeypatch.setattr(backend_module, "maybe_signature", lambda chord, app: SimpleNamespace(delay=lambda: sent.append(chord)))
    group = uuid.uuid4().hex

    def report(task_id):
        backend.on_chord_part_return(SimpleNamespace(group=group, id=task_id, chord=task_id), states.SUCCESS, {})

    waiting = uuid.uuid4().hex
    backend.set_chord_size(waiting, 3)
    assert backend.chord_counts(waiting) == (0, 3), "a size stored, no part reported yet"
    report("task-1")  # before the size is stored
    assert backend.chord_counts(group) == (1, -1)
    backend.set_chord_size(group, 3)
    report("task-2")
    report("task-2")  # redelivered, ran again
    report("task-1")
    assert sent == [] and backend.chord_counts(group) == (2, 1)
    report("task-3")
    assert sent == ["task-3"] and backend.chord_counts(group) == (3, 0)
    report("task-3")  # its first run may have died before sending the terminator
    report("task-1")  # a late duplicate of another part sends nothing
    assert sent == ["task-3", "task-3"] and backend.chord_counts(group) == (3, 0)


def test_the_counter_stays_small_and_the_group_is_not_stored(emulator, monkeypatch):
    # DynamoDB items stop at 400 KB: neither the counter nor anything else may hold a mark per part.
    backend = app.backend
    monkeypatch.setattr(backend_module, "maybe_signature", lambda chord, app: SimpleNamespace(delay=lambda: None))
    group = uuid.uuid4().hex
    backend.apply_chord((group, [(uuid.uuid4().hex, None) for _ in range(5)]), None)
    backend.set_chord_size(group, 300)
    for n in range(300):
        backend.on_chord_part_return(SimpleNamespace(group=group, id=f"task-{n}", chord={}), states.SUCCESS, {})
    counter = backend.client.get_item(**backend._prepare_get_request(str(backend.get_key_for_chord(group))))["Item"]
    assert set(counter) == {"id", "parts", "remaining", "last"}
    assert backend.get(backend.get_key_for_group(group)) is None


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


def test_a_count_cancelled_by_another_parts_transaction_is_tried_again(emulator, monkeypatch):
    # On DynamoDB, transactions on one item at the same time cancel each other
    # (TransactionConflict); every part counts in the chord's one counter item.
    from botocore.exceptions import ClientError

    backend = app.backend
    real, conflicts = backend.client, []

    class Conflicting:
        def __getattr__(self, name):
            return getattr(real, name)

        def transact_write_items(self, **request):
            if len(conflicts) < 2:
                conflicts.append(1)
                raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                                   "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}]},
                                  "TransactWriteItems")
            return real.transact_write_items(**request)

    conflicting = Conflicting()
    monkeypatch.setattr(backend, "_get_client", lambda *args, **kwargs: conflicting)
    group = uuid.uuid4().hex
    backend.set_chord_size(group, 2)
    backend.on_chord_part_return(SimpleNamespace(group=group, id="task-1", chord={}), states.SUCCESS, {})
    assert conflicts == [1, 1] and backend.chord_counts(group) == (1, 1)
