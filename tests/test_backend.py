import uuid

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
