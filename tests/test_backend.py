import json
import os
import time
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


def test_a_callback_not_sent_is_told_to_the_chords_owner_and_the_chord_left_unmarked(monkeypatch):
    # The backend counts parts and sends the callback; what a failed send means, it does not know.
    backend = app.backend
    refused = ConnectionError("SQS unreachable")

    def delay():
        raise refused

    callback = SimpleNamespace(task="another.callback", id="callback-id", args=(), delay=delay)
    monkeypatch.setattr(backend_module, "maybe_signature", lambda chord, app: callback)
    monkeypatch.setattr(backend, "_count_part", lambda key, task_id: True)  # the last part
    marked, told = [], []
    monkeypatch.setattr(backend, "mark_callback_sent", marked.append)
    monkeypatch.setattr(backend, "mark_as_failure", lambda *args, **kwargs: marked.append(args))

    def owner(sender, signal, **kwargs):
        told.append((sender, kwargs))

    backend_module.callback_not_sent.connect(owner)
    try:
        backend.on_chord_part_return(SimpleNamespace(group="g", id="last", chord={}), states.SUCCESS, {})
    finally:
        backend_module.callback_not_sent.disconnect(owner)
    assert told == [(backend, {"group_id": "g", "callback": callback, "exc": refused})]
    assert marked == [], "neither marked sent nor failed: watching the chord is its owner's"


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
    assert set(counter) == {"id", "parts", "remaining", "last", "sent", "ttl"}
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


def in_a_forked_child(report):
    """What ``report()`` returns (JSON) in a child forked from this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            os.write(write, json.dumps(report()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    return child


def test_a_forked_process_makes_its_own_clients(emulator):
    # Worker processes are forked from the worker's main process. Connections are
    # kept alive, so a client shared across the fork would carry two processes'
    # requests on one connection, and each could read the other's response.
    from carcelery import aws

    backend = app.backend
    task_id = uuid.uuid4().hex
    backend.store_result(task_id, {"n": 1}, states.SUCCESS)
    inherited = (backend.client, aws.client("s3"))

    def report():
        ours = (backend.client, aws.client("s3"))
        return {"shared": [a is b for a, b in zip(ours, inherited, strict=True)],
                "works": backend.get_task_meta(task_id, cache=False)["result"] == {"n": 1}}

    assert in_a_forked_child(report) == {"shared": [False, False], "works": True}
    assert backend.client is inherited[0] and aws.client("s3") is inherited[1], "the parent keeps its own"


def test_a_url_naming_its_own_dynamodb_gets_a_client_of_its_own(emulator):
    # The deployment's URL (region and table) shares the process's client. One
    # naming an endpoint or credentials is Celery's: a client of its own, made
    # again in a forked child too, and the table created with TTL on first use.
    from carcelery import aws
    from carcelery.settings import settings

    assert app.backend.client is aws.client("dynamodb")
    table, task_id = f"test-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    endpoint = f"http://127.0.0.1:{settings.emulator_port}"
    backend = OncePerPartDynamoDBBackend(app=app, url=f"dynamodb://testing:testing@127.0.0.1:{settings.emulator_port}"
                                                      f"/{table}?ttl_seconds=60")
    client = backend.client
    assert client is not aws.client("dynamodb") and client.meta.endpoint_url == endpoint
    assert client.describe_time_to_live(TableName=table)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    backend.store_result(task_id, {"n": 1}, states.SUCCESS)

    def report():
        return {"shared": backend.client is client, "endpoint": backend.client.meta.endpoint_url,
                "works": backend.get_task_meta(task_id, cache=False)["result"] == {"n": 1}}

    assert in_a_forked_child(report) == {"shared": False, "endpoint": endpoint, "works": True}
    assert backend.client is client, "the parent keeps its own"


def test_what_the_backend_writes_expires_after_result_expires(emulator, monkeypatch):
    # DynamoDB's TTL deletes an item once the time in its "ttl" attribute has
    # passed: provision enables it on the results table, and each write of a
    # result, a chord counter or a part's mark sets it to now + CARCELERY_RESULT_EXPIRES.
    from carcelery.settings import settings

    backend = app.backend
    monkeypatch.setattr(backend_module, "maybe_signature", lambda chord, app: SimpleNamespace(delay=lambda: None))
    expires = settings.result_expires
    assert backend.time_to_live_seconds == app.conf.result_expires == expires
    assert backend.client.describe_time_to_live(TableName=backend.table_name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED", "AttributeName": backend._ttl_field.name}
    group, tasks = uuid.uuid4().hex, [uuid.uuid4().hex for _ in range(2)]
    before = time.time()
    backend.set_chord_size(group, 2)
    for task_id in tasks:  # a part that leaves one remaining, then the last one
        backend.store_result(task_id, {"n": 1}, states.SUCCESS)
        backend.on_chord_part_return(SimpleNamespace(group=group, id=task_id, chord={}), states.SUCCESS, {})
    after = time.time()
    chord = str(backend.get_key_for_chord(group))
    keys = [chord] + [str(backend.get_key_for_task(t)) for t in tasks] + [f"{chord}-part-{t}" for t in tasks]
    for key in keys:
        item = backend.client.get_item(**backend._prepare_get_request(key), ConsistentRead=True)["Item"]
        assert int(before + expires) <= int(item["ttl"]["N"]) <= after + expires, key


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
