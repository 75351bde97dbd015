"""The outputs a run leaves (output.txt, results.jsonl, report.html, ``latest``, the index) only move forward."""

import dataclasses
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from test_events import wait_until
from test_index import WHERE, record
from test_pipeline import own_stack

from carcelery import aws
from carcelery.aws import provision
from carcelery.embedded.demo import Stack
from carcelery.pipeline import index, latest, outputs, records, report, results
from carcelery.recognizers import CAR, Label, TextLine
from carcelery.settings import settings


class Store:
    """The records table in memory, and what was read of it: ``whole`` reads, and the keys of each ``get``."""

    def __init__(self):
        self.records, self.whole, self.got = {}, 0, []

    def with_runs(self, bucket, prefix=""):
        self.whole += 1
        return (("r", self.records[key]) for key in sorted(self.records, key=results.natural_key))

    def get(self, bucket, keys):
        self.got.append(sorted(keys))
        return {records.order(key): self.records.get(key) for key in keys}


@pytest.fixture
def unread(monkeypatch):
    """Reports written without reading images: report.html holds its run's id."""
    def written(folder, run_id, found, counts, read):
        (folder / results.REPORT).write_text(run_id)
        return folder / results.REPORT
    monkeypatch.setattr(report, "write", written)


@pytest.fixture
def use(monkeypatch, unread, index_s3):
    """``use(store)``: the terminators' store from now on; the index in S3 (moto), at WHERE's bucket."""
    monkeypatch.setattr(index, "location", lambda bucket, prefix, uri: WHERE)

    def using(store):
        for module, name in ((records, "with_runs"), (records, "get")):
            monkeypatch.setattr(module, name, getattr(store, name))
        return store
    return using


def segments_in_s3(client):
    """The names of the index's segments in S3."""
    found = client.list_objects_v2(Bucket=WHERE.bucket, Prefix=f"{WHERE.prefix}{index.SEGMENTS}").get("Contents", [])
    return sorted(item["Key"].rpartition("/")[2] for item in found)


def slowed(monkeypatch, slow_run):
    """(in its report, go on): run ``slow_run``'s report waits in the middle until ``go on`` is set."""
    in_report, go_on = threading.Event(), threading.Event()
    written = report.write

    def slowly(folder, run_id, found, counts, read):  # a picture that takes long to read
        if run_id == slow_run["id"]:
            in_report.set()
            assert go_on.wait(60)
        return written(folder, run_id, found, counts, read)
    monkeypatch.setattr(report, "write", slowly)
    return in_report, go_on


def run(*keys):
    """A run of S3 events (of ``keys``), or with none named a dispatch."""
    return {"id": uuid.uuid4().hex[:12], "bucket": "b", **({"keys": list(keys)} if keys else {})}


def keeping(monkeypatch, keep):
    """CARCELERY_KEEP_RUNS=``keep`` for the terminators of this test."""
    monkeypatch.setattr(latest, "settings", dataclasses.replace(settings, keep_runs=keep))


def lines(root):
    path = root / results.OUTPUT
    return path.read_text().splitlines() if path.exists() else []


def test_after_a_new_store_each_run_of_events_shows_its_change(tmp_path, use, index_s3):
    old = use(Store())
    for n in range(1, 4):
        old.records[f"{n}.jpg"] = record(f"{n}.jpg", f"OLD{n}")
        outputs.write(run(), tmp_path)
    assert lines(tmp_path) == ["1.jpg: OLD1", "2.jpg: OLD2", "3.jpg: OLD3"]
    # The emulator started again with the same output folder: a new store and a new S3, whose index counts from 1.
    for item in index_s3.list_objects_v2(Bucket=WHERE.bucket)["Contents"]:
        index_s3.delete_object(Bucket=WHERE.bucket, Key=item["Key"])
    new = use(Store())
    new.records["A.jpg"] = record("A.jpg", "A")
    outputs.write(run("A.jpg"), tmp_path)
    assert lines(tmp_path) == ["A.jpg: A"]
    new.records["B.jpg"] = record("B.jpg", "B")
    outputs.write(run("B.jpg"), tmp_path)
    assert lines(tmp_path) == ["A.jpg: A", "B.jpg: B"], "the run of B changed nothing"
    del new.records["A.jpg"]
    outputs.write(run("A.jpg"), tmp_path)
    assert lines(tmp_path) == ["B.jpg: B"], "the removal of A changed nothing"
    manifest = index.read(WHERE)
    assert manifest.version == 3 and segments_in_s3(index_s3) == sorted(s["name"] for s in manifest.segments)
    assert json.loads((tmp_path / latest.SHOWN).read_text()) == {"epoch": manifest.epoch, "version": 3}


def test_runs_alternating_between_two_hosts_read_their_own_records_once(tmp_path, use):
    # Two Instance B hosts (two output folders), one store: the runs of events land on either.
    store, hosts = use(Store()), [tmp_path / "one", tmp_path / "two"]
    store.records.update({f"{n}.jpg": record(f"{n}.jpg", f"OLD{n}") for n in range(1, 6)})
    outputs.write(run(), hosts[0])  # a dispatch: the whole bucket
    for n in range(6, 12):
        store.records[f"{n}.jpg"] = record(f"{n}.jpg", f"NEW{n}")
        outputs.write(run(f"{n}.jpg"), hosts[n % 2])
    assert store.whole == 1, "a run of events read the whole bucket"
    assert store.got == [[f"{n}.jpg"] for n in range(6, 12)], "a run of events read other records, or its own twice"
    whole = [f"{n}.jpg: {'OLD' if n < 6 else 'NEW'}{n}" for n in range(1, 12)]
    assert lines(hosts[1]) == whole and lines(hosts[0]) == whole[:-1]


def test_a_run_that_loses_the_race_to_another_host_applies_its_records_to_the_winners(tmp_path, use, monkeypatch, index_s3):
    store, one, two = use(Store()), tmp_path / "one", tmp_path / "two"
    store.records["1.jpg"] = record("1.jpg", "ONE")
    outputs.write(run(), one)
    getting, late = store.get, run("5.jpg")

    def overtaken(bucket, keys):  # while host one reads its records, host two's run replaces the manifest
        if keys == ["4.jpg"] and not store.got:
            store.records["5.jpg"] = record("5.jpg", "FIVE")
            outputs.write(late, two)
        return getting(bucket, keys)
    monkeypatch.setattr(records, "get", overtaken)
    store.records["4.jpg"] = record("4.jpg", "FOUR")
    slow = run("4.jpg")
    outputs.write(slow, one)
    both = "1.jpg: ONE\n4.jpg: FOUR\n5.jpg: FIVE\n"
    assert (one / outputs.RUNS / slow["id"] / results.OUTPUT).read_text() == both, "host two's record lost"
    assert lines(one) == both.splitlines()
    manifest = index.read(WHERE)
    assert manifest.version == 3 and segments_in_s3(index_s3) == sorted(s["name"] for s in manifest.segments), \
        "the lost attempt's segments left in S3"


def test_a_terminator_that_ends_after_a_later_runs_leaves_latest_to_it(tmp_path, use, monkeypatch):
    store = use(Store())
    store.records["1.jpg"] = record("1.jpg", "ONE")
    outputs.write(run(), tmp_path)
    # One run's folder kept: the slow run's, still being written when the later one prunes, is not deleted.
    keeping(monkeypatch, 1)
    slow, late = run("5.jpg"), run("6.jpg")
    in_report, go_on = slowed(monkeypatch, slow)

    store.records["5.jpg"] = record("5.jpg", "FIVE")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(outputs.write, slow, tmp_path)
        try:
            assert in_report.wait(60)
            store.records["6.jpg"] = record("6.jpg", "SIX")
            outputs.write(late, tmp_path)
            assert lines(tmp_path) == ["1.jpg: ONE", "5.jpg: FIVE", "6.jpg: SIX"]
        finally:
            go_on.set()
        first.result(60)
    assert lines(tmp_path) == ["1.jpg: ONE", "5.jpg: FIVE", "6.jpg: SIX"], "output.txt went back to the slow run's"
    assert (tmp_path / outputs.LATEST).resolve() == (tmp_path / outputs.RUNS / late["id"]).resolve()
    assert (tmp_path / results.REPORT).read_text() == late["id"]
    assert (tmp_path / outputs.RUNS / slow["id"] / results.REPORT).read_text() == slow["id"], "its own files, kept"


def test_of_two_hosts_terminators_the_later_runs_files_stay_in_the_uris_latest(emulator, bucket, tmp_path,
                                                                               unread, monkeypatch):
    # Two Instance B hosts (two output folders), one store and one CARCELERY_OUTPUT_URI.
    provision.bucket(f"{bucket}-out")
    uri, one, two = f"s3://{bucket}-out/o/", tmp_path / "one", tmp_path / "two"

    def stored(key):
        made = results.detection(key, bucket=bucket, key=key, etag="e", labels=[Label(CAR, 99.0)], threshold=50)
        records.put(results.with_text(made, [TextLine(key[0] * 3, 99.0)]), "r")

    def latest():
        return aws.client("s3").get_object(Bucket=f"{bucket}-out", Key="o/latest/output.txt")["Body"].read().decode()

    stored("1.jpg")
    outputs.write({**run(), "bucket": bucket}, one, uri)
    slow, late = {**run("5.jpg"), "bucket": bucket}, {**run("6.jpg"), "bucket": bucket}
    in_report, go_on = slowed(monkeypatch, slow)
    stored("5.jpg")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(outputs.write, slow, one, uri)
        try:
            assert in_report.wait(60)
            stored("6.jpg")
            outputs.write(late, two, uri)
            assert latest() == "1.jpg: 111\n5.jpg: 555\n6.jpg: 666\n"
        finally:
            go_on.set()
        first.result(60)
    assert latest() == "1.jpg: 111\n5.jpg: 555\n6.jpg: 666\n", "the URI's latest/ went back to the slow run's"
    assert lines(one) == ["1.jpg: 111", "5.jpg: 555"], "host one's latest: the newest run it ended"


# Integration: the fault matrix's seam "two overlapping terminators", on real workers and S3 events.

DELAY = 60  # s: the slow run's picture; the later run ends within it (its overlap is checked, not assumed)


def test_two_overlapping_terminators_leave_the_later_runs_outputs_here_and_in_s3(emulator, bucket, faults, tmp_path):
    provision.bucket(f"{bucket}-out")
    s3 = aws.client("s3")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_BUCKET=bucket, CARCELERY_EVENTS_WINDOW="0.3",
                   CARCELERY_OUTPUT_URI=f"s3://{bucket}-out/carcelery/") as stack:
        stack.start_worker("worker_a", "detect", 1)
        assert stack.run("carcelery.aws.provision", "--events").returncode == 0
        stack.start_worker("worker_b", "text", 2)  # two terminators at once
        wait_until(lambda: "events: consuming" in stack.log("worker_a"), "worker_a consuming the events", 30)

        def shown():
            here = stack.output_dir / results.OUTPUT
            return here.read_text() if here.exists() else ""

        s3.put_object(Bucket=bucket, Key="1.jpg", Body=b"noop never reads it")
        wait_until(lambda: shown() == "1.jpg: NOOP\n", "1.jpg's line")
        # 5.jpg's run: its report's picture is held (DELAY s at most). 6.jpg is uploaded while it waits.
        faults.set({"call": "s3:GetObject", "match": [bucket, "/5.jpg"], "fault": "delay", "seconds": DELAY,
                    "times": 1})
        s3.put_object(Bucket=bucket, Key="5.jpg", Body=b"noop never reads it")
        wait_until(lambda: faults.hits() == [1], "5.jpg's run in its report")
        (slow,) = [p.name for p in (stack.output_dir / outputs.RUNS).iterdir()
                   if (p / results.OUTPUT).read_text() == "1.jpg: NOOP\n5.jpg: NOOP\n"]
        s3.put_object(Bucket=bucket, Key="6.jpg", Body=b"noop never reads it")
        both = "1.jpg: NOOP\n5.jpg: NOOP\n6.jpg: NOOP\n"
        wait_until(lambda: shown() == both, "6.jpg's line", DELAY)
        ended = f"run={slow} terminator -1:"
        assert ended not in stack.log("worker_b"), "5.jpg's run ended before 6.jpg's: no overlap (raise DELAY)"
        faults.set()  # the overlap is shown: the held picture goes on now (faults: a withdrawn delay ends)

        wait_until(lambda: ended in stack.log("worker_b"), "5.jpg's run's end", DELAY + 60)
        assert shown() == both, "output.txt went back to the slow run's"
        latest = s3.get_object(Bucket=f"{bucket}-out", Key="carcelery/latest/output.txt")["Body"].read()
        assert latest.decode() == both, "the URI's latest/ went back to the slow run's"
        kept = s3.get_object(Bucket=f"{bucket}-out", Key=f"carcelery/runs/{slow}/output.txt")["Body"].read()
        assert kept == b"1.jpg: NOOP\n5.jpg: NOOP\n", "the slow run's own files, uploaded"
        assert "Traceback" not in stack.log("worker_b")


@pytest.mark.integration
def test_after_the_emulator_starts_again_each_run_of_events_reaches_output_txt(tmp_path, port):
    # The embedded default's store is new at every start of the emulator; the output folder stays.
    stack = Stack(tmp_path, {"CARCELERY_EMULATOR_PORT": str(port), "CARCELERY_OUTPUT_DIR": str(tmp_path / "out"),
                             "CARCELERY_RECOGNIZER": "noop", "CARCELERY_EVENTS_WINDOW": "0.3"})
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=settings.region,
                      **settings.credentials)

    def upload(key):
        s3.put_object(Bucket=settings.bucket, Key=key, Body=b"noop never reads it")

    def remove(key):
        s3.delete_object(Bucket=settings.bucket, Key=key)

    lives = [  # (what is done, the images output.txt shows then): the old store's run (version 1), then the new one's
        [(upload, "1.jpg", ["1.jpg"])],
        [(upload, "A.jpg", ["A.jpg"]), (upload, "B.jpg", ["A.jpg", "B.jpg"]), (remove, "A.jpg", ["B.jpg"])],
    ]
    with stack:
        for steps in lives:
            stack.start_emulator()
            assert stack.run("carcelery.aws.provision", "--events").returncode == 0
            stack.start_worker("worker_a", "detect", 1)
            stack.start_worker("worker_b", "text", 1)
            for do, key, expected in steps:
                do(key)
                shown = [f"{k}: NOOP" for k in expected]
                wait_until(lambda shown=shown: lines(stack.output_dir) == shown, f"{shown} after {do.__name__} {key}")
            stack.stop()
