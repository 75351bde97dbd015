"""Which runs' folders are kept (CARCELERY_KEEP_RUNS): the newest that ended and latest's, here and in S3."""

import logging
import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_events import wait_until
from test_index import record
from test_pipeline import dispatch, own_stack
import test_outputs
from test_outputs import Store, keeping, lines, run

from carcelery import aws
from carcelery.aws import provision
from carcelery.pipeline import outputs, records, results, retention
from carcelery.recognizers import CAR, Label, TextLine

unread, use = test_outputs.unread, test_outputs.use  # its fixtures: terminators on a store in memory
run_ids = st.text("0123456789abcdef", min_size=12, max_size=12)


@given(st.dictionaries(run_ids, st.tuples(st.floats(0, 2e9), st.integers(0, 10))), st.integers(1, 30), run_ids)
def test_all_but_the_newest_are_pruned_and_never_the_shown(ended, keep, shown):
    gone = retention.pruned(ended, keep, shown)
    kept = set(ended) - set(gone)
    assert set(gone) <= set(ended) and shown not in gone
    if gone and kept - {shown}:  # every run kept (but the shown) is as new as any pruned
        assert min(ended[r] for r in kept - {shown}) >= max(ended[r] for r in gone)
    assert len(kept) == min(len(ended), keep) or (len(kept) == keep + 1 and shown in kept), \
        "kept: keep runs, and the shown besides"


def test_the_oldest_go_first_and_of_one_second_the_lower_version():
    ended = {"a": (1.0, 0), "b": (3.0, 0), "c": (2.0, 0), "d": (4.0, 0)}
    assert retention.pruned(ended, 2, "") == ["a", "c"]
    assert retention.pruned(ended, 2, "a") == ["c"]
    assert retention.pruned(ended, 9, "") == []
    assert retention.pruned({"f": (5.0, 1), "e": (5.0, 2)}, 1, "") == ["f"]


def folders(root):
    return {p.name for p in (root / outputs.RUNS).iterdir()}


def test_dispatched_runs_and_runs_of_events_alike_are_kept_to_keep_runs(tmp_path, use, monkeypatch):
    keeping(monkeypatch, 2)
    store, made = use(Store()), []
    for n, named in enumerate((False, True, False, True), 1):  # dispatches and runs of events, taking turns
        store.records[f"{n}.jpg"] = record(f"{n}.jpg", f"N{n}")
        made.append(run(f"{n}.jpg") if named else run())
        outputs.write(made[-1], tmp_path)
        # Reports written a second apart: the order does not rest on the file system's clock's resolution.
        os.utime(tmp_path / outputs.RUNS / made[-1]["id"] / results.REPORT, (n, n))
    assert folders(tmp_path) == {made[2]["id"], made[3]["id"]}
    assert (tmp_path / outputs.LATEST).resolve().name == made[3]["id"]
    assert lines(tmp_path) == ["1.jpg: N1", "2.jpg: N2", "3.jpg: N3", "4.jpg: N4"]


def test_a_folder_still_being_written_and_latests_are_kept(tmp_path, use, monkeypatch):
    keeping(monkeypatch, 1)
    store = use(Store())
    store.records["1.jpg"] = record("1.jpg", "ONE")
    first = run()
    outputs.write(first, tmp_path)
    writing = tmp_path / outputs.RUNS / uuid.uuid4().hex[:12]  # a terminator's folder before its report
    writing.mkdir()
    (writing / results.OUTPUT).write_text("1.jpg: ONE\n")
    later = run("1.jpg")
    outputs.write(later, tmp_path)
    assert folders(tmp_path) == {later["id"], writing.name}
    # latest's folder stays, even when newer ones that ended would fill the count.
    newer = tmp_path / outputs.RUNS / uuid.uuid4().hex[:12]
    newer.mkdir()
    (newer / results.REPORT).write_text("")
    os.utime(newer / results.REPORT, (4e9, 4e9))
    assert retention.prune_here(tmp_path / outputs.RUNS, 1, later["id"]) == []


@pytest.mark.integration
def test_s3s_runs_are_pruned_in_batches_and_latest_stays(emulator, bucket, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 3)  # two runs' eight keys: three DeleteObjects
    s3 = aws.client("s3")
    out = f"{bucket}-out"
    provision.bucket(out)
    # Runs 1 to 4, their ids backwards: within one second of S3's times, the version orders them.
    for version, run_id in enumerate(("d" * 12, "c" * 12, "b" * 12, "a" * 12), 1):
        retention.mark_s3(out, f"o/runs/{run_id}/", version)
        for name in outputs.FILES:
            s3.put_object(Bucket=out, Key=f"o/runs/{run_id}/{name}", Body=run_id.encode())
    s3.put_object(Bucket=out, Key="o/runs/eeeeeeeeeeee/output.txt", Body=b"being uploaded")
    s3.put_object(Bucket=out, Key="o/latest/output.txt", Body=b"a")
    assert retention.prune_s3(out, "o/runs/", 1, "d" * 12) == ["b" * 12, "c" * 12]
    left = {item["Key"] for item in s3.list_objects_v2(Bucket=out, Prefix="o/")["Contents"]}
    assert left == {*(f"o/runs/{r * 12}/{name}" for r in "ad" for name in outputs.FILES),
                    "o/runs/dddddddddddd/.version-1", "o/runs/aaaaaaaaaaaa/.version-4",
                    "o/runs/eeeeeeeeeeee/output.txt", "o/latest/output.txt"}

def test_after_more_runs_than_kept_only_the_kept_folders_remain_here_and_in_s3(emulator, bucket, tmp_path):
    """A dispatched run, then three runs of S3 events, on real workers; two kept."""
    provision.bucket(f"{bucket}-out")
    s3 = aws.client("s3")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_BUCKET=bucket, CARCELERY_EVENTS_WINDOW="0.3",
                   CARCELERY_KEEP_RUNS="2", CARCELERY_OUTPUT_URI=f"s3://{bucket}-out/carcelery/") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        shown, ended = [], []

        def latest():
            return (stack.output_dir / outputs.LATEST).resolve().name

        s3.put_object(Bucket=bucket, Key="0.jpg", Body=b"noop never reads it")
        assert dispatch(stack, "--bucket", bucket).returncode == 0
        shown.append("0.jpg: NOOP\n")
        ended.append(latest())
        assert stack.run("carcelery.aws.provision", "--events").returncode == 0
        wait_until(lambda: "events: consuming" in stack.log("worker_a"), "worker_a consuming the events", 30)
        for n in (1, 2, 3):
            s3.put_object(Bucket=bucket, Key=f"{n}.jpg", Body=b"noop never reads it")
            shown.append(f"{n}.jpg: NOOP\n")
            wait_until(lambda: lines(stack.output_dir) == "".join(shown).splitlines(), f"{n}.jpg's line")
            ended.append(latest())
        assert len(set(ended)) == 4, ended

        # The last terminator prunes after it links latest, and uploads and prunes S3 after that: waited for.
        def in_s3():
            found = s3.list_objects_v2(Bucket=f"{bucket}-out", Prefix="carcelery/runs/").get("Contents", [])
            return {item["Key"].split("/")[2] for item in found}

        def uploaded():
            return s3.get_object(Bucket=f"{bucket}-out", Key="carcelery/latest/output.txt")["Body"].read().decode()

        wait_until(lambda: folders(stack.output_dir) == set(ended[2:]), f"the folders of {ended[2:]} alone")
        wait_until(lambda: uploaded() == "".join(shown) and in_s3() == set(ended[2:]), f"{ended[2:]} alone in S3")
        assert (stack.output_dir / results.OUTPUT).read_text() == "".join(shown)
        assert "Traceback" not in stack.log("worker_b") and "not pruned" not in stack.log("worker_b")


@pytest.mark.parametrize("call", ["s3:ListObjectsV2", "s3:DeleteObjects"])
def test_a_pruning_refused_is_logged_and_the_run_ends(emulator, bucket, faults, tmp_path, unread, monkeypatch,
                                                      caplog, call):
    keeping(monkeypatch, 1)
    provision.bucket(f"{bucket}-out")
    uri = f"s3://{bucket}-out/o/"
    made = results.detection("1.jpg", bucket=bucket, key="1.jpg", etag="e", labels=[Label(CAR, 99.0)], threshold=50)
    records.put(results.with_text(made, [TextLine("ONE", 99.0)]), "r")
    first = {**run(), "bucket": bucket}
    outputs.write(first, tmp_path, uri)
    # The runs' folders' calls alone ("runs": in the listing's query, in the deletion's keys), not the index's.
    faults.set({"call": call, "match": [f"{bucket}-out", "runs"], "fault": "denied", "times": None})
    with caplog.at_level(logging.WARNING, logger=retention.__name__):
        later = outputs.write({**run(), "bucket": bucket}, tmp_path, uri)
    assert faults.hits() == [1]
    faults.set()
    assert later["output_uri"] == f"{uri}runs/{later['run']}/" and lines(tmp_path) == ["1.jpg: ONE"]
    assert folders(tmp_path) == {later["run"]}, "pruned here all the same"
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"old runs under s3://{bucket}-out/o/runs/ not pruned" in warning and "AccessDenied" in warning
    assert "s3:ListBucket" in warning and "s3:DeleteObject" in warning
    left = aws.client("s3").list_objects_v2(Bucket=f"{bucket}-out", Prefix=f"o/runs/{first['id']}/")
    assert left["KeyCount"] == 4, "the first run's folder stays in S3"
