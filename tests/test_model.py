"""The pipeline's shapes (``pipeline.model``): the records the builders make, old records read, and the task
messages' checks (``carcelery.arguments``) accepting only what the types say, whatever JSON a field holds."""

from __future__ import annotations

import copy
import json
import types
import typing
from enum import Enum

from hypothesis import given, settings
from hypothesis import strategies as st

from carcelery import arguments
from carcelery.pipeline import costs, model, results
from carcelery.pipeline.model import Stage, Status
from carcelery.recognizers import Box, Label, TextLine
from test_bad_messages import _paths, _replaced  # any part of a JSON value, replaced

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
REF = {"bucket": "b", "key": "1.jpg", "etag": "e", "run": "0123456789ab"}
RUN = {"id": "0123456789ab", "bucket": "b", "prefix": "cars/", "keys": ["cars/1.jpg"]}
CAR = results.detection("1.jpg", bucket="b", key="1.jpg", etag="e", threshold=90.0,
                        labels=[Label("Car", 99.0, (Box(0.1, 0.1, 0.5, 0.5),))])


def conforms(value, hint) -> bool:
    """Whether JSON ``value`` is of type ``hint`` (a ``model`` shape, or what its fields are made of)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint, include_extras=True)
        optional = {name for name, field in fields.items() if typing.get_origin(field) is typing.NotRequired}
        unwrapped = {name: typing.get_args(field)[0] if name in optional else field for name, field in fields.items()}
        return isinstance(value, dict) and all(
            conforms(value[name], field) if name in value else name in optional for name, field in unwrapped.items())
    if isinstance(hint, type) and issubclass(hint, Enum):
        return value in {m.value for m in hint}
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None) or hint is None:
        return value is None
    return isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), value=JSON, drop=st.booleans())
def test_what_the_checks_accept_is_of_the_tasks_types(data, value, drop):
    """Any JSON anywhere in a ref, a run or a detection (or a field left out): accepted only if it is the type."""
    check, good, shape = data.draw(st.sampled_from([
        (arguments.detect_car, REF, model.Ref), (arguments.terminate, RUN, model.Run),
        (lambda run: arguments.watch_run(run, "g", "t"), RUN, model.Run),
        (arguments.recognize_text, json.loads(json.dumps(CAR)), model.Record)]))
    path = data.draw(st.sampled_from(list(_paths(good))[1:]))
    if drop:
        changed = copy.deepcopy(good)
        target = changed
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
    else:
        changed = _replaced(good, path, value)
    if check(changed) is None:
        read = model.record(changed) if shape is model.Record else changed
        if shape is model.Record:  # recognize_text replaces the text; the rest it reads, and keeps on failure
            read = {**read, "text": []}
        assert conforms(read, shape), changed


def test_the_checks_accept_what_the_pipeline_sends():
    assert conforms(REF, model.Ref) and conforms(RUN, model.Run) and conforms(json.loads(json.dumps(CAR)), model.Record)
    assert arguments.detect_car(REF) is None and arguments.terminate(RUN) is None
    assert arguments.recognize_text(json.loads(json.dumps(CAR)), RUN["id"]) is None


def test_a_run_with_a_null_prefix_or_a_label_without_boxes_is_refused_by_name():
    # The terminator reads the prefix as text (a key's start), text_regions a car label's boxes.
    assert arguments.terminate({**RUN, "prefix": None}) == "run.prefix is null"
    no_boxes = {**CAR, "labels": [{"name": "Car", "confidence": 99.0}]}
    assert arguments.recognize_text(no_boxes) == "record.labels[0] has no boxes"
    assert arguments.recognize_text({**CAR, "status": "failed"}).startswith("record.status is 'failed', not 'done'")


def test_each_status_is_json_text_and_the_car_decision_is_apart_from_failure():
    text_failed = results.failure("1.jpg", Stage.TEXT, "deleted since listed", bucket="b", etag="e", detected=CAR)
    detect_failed = results.failure("2.jpg", Stage.DETECT, "not an image", bucket="b")
    pending = results.pending("3.jpg", bucket="b", key="3.jpg", etag="e")
    done = results.with_text(CAR, [TextLine("AB 123", 99.0)])
    as_json = [json.loads(json.dumps(r)) for r in (done, text_failed, detect_failed, pending)]
    assert [r["status"] for r in as_json] == ["done", "failed", "failed", "pending"]
    assert [r["car"] for r in as_json] == [True, True, None, None]
    assert text_failed["labels"] == CAR["labels"] and text_failed["car_confidence"] == 99.0
    assert "error" not in pending and as_json[1]["error"] == {"stage": "text", "reason": "deleted since listed"}
    assert all(conforms(r, model.Record) for r in as_json)


def test_a_record_kept_before_status_reads_as_what_it_stood_for():
    old_done = {"image": "1.jpg", "bucket": "b", "key": "1.jpg", "etag": "e", "car": True, "car_confidence": 99.0,
                "threshold": 90.0, "labels": [], "text": []}
    old_failed = {**old_done, "car": False, "error": {"stage": "detect", "reason": "not an image"}}
    old_pending = {**old_done, "car": False, "error": {"stage": "pending", "reason": "no result yet (run r)"}}
    assert model.record(old_done)["status"] == Status.DONE
    assert model.record(old_failed)["status"] == Status.FAILED and model.record(old_failed)["error"]["stage"] == "detect"
    pending = model.record(old_pending)
    assert pending["status"] == Status.PENDING and "error" not in pending and pending["car"] is None


def test_pending_images_are_counted_apart_from_failures_and_billed_nothing(tmp_path):
    pending = results.pending("2.jpg", bucket="b", key="2.jpg", etag="e")
    counts = results.write(tmp_path, [CAR, pending])
    assert (counts["images"], counts["failed"], counts["failures"]) == (2, 0, [])
    assert costs.calls([pending]) == {costs.DETECT_LABELS: 0, costs.DETECT_TEXT: 0}
    text_failed = results.failure("3.jpg", Stage.TEXT, "gone", bucket="b", detected=CAR)
    assert costs.calls([text_failed]) == {costs.DETECT_LABELS: 1, costs.DETECT_TEXT: 0}
