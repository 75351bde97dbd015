"""Which runs' folders are kept (CARCELERY_KEEP_RUNS): the newest that ended and latest's, here and in S3."""

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_index import record
from test_outputs import Store, keeping, lines, run, unread, use  # noqa: F401 - unread, use: fixtures

from carcelery import aws
from carcelery.aws import provision
from carcelery.pipeline import outputs, results, retention

run_ids = st.text("0123456789abcdef", min_size=12, max_size=12)


@given(st.dictionaries(run_ids, st.floats(0, 2e9)), st.integers(1, 30), run_ids)
def test_all_but_the_newest_are_pruned_and_never_the_shown(ended, keep, shown):
    gone = retention.pruned(ended, keep, shown)
    kept = set(ended) - set(gone)
    assert set(gone) <= set(ended) and shown not in gone
    newest = sorted(ended, key=lambda r: (ended[r], r), reverse=True)[:keep]
    assert kept == set(newest) | ({shown} & set(ended)), "kept: the newest and the shown, nothing else"


def test_the_oldest_go_first():
    ended = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}
    assert retention.pruned(ended, 2, "") == ["a", "c"]
    assert retention.pruned(ended, 2, "a") == ["c"]
    assert retention.pruned(ended, 9, "") == []


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
    monkeypatch.setattr(retention, "BATCH", 2)  # three runs' nine keys: five DeleteObjects
    s3 = aws.client("s3")
    out = f"{bucket}-out"
    provision.bucket(out)
    for n, run_id in enumerate(("a" * 12, "b" * 12, "c" * 12, "d" * 12)):
        for name in outputs.FILES:
            s3.put_object(Bucket=out, Key=f"o/runs/{run_id}/{name}", Body=run_id.encode())
    s3.put_object(Bucket=out, Key="o/runs/eeeeeeeeeeee/output.txt", Body=b"being uploaded")
    s3.put_object(Bucket=out, Key="o/latest/output.txt", Body=b"d")
    assert retention.prune_s3(out, "o/runs/", 1, "a" * 12) == ["b" * 12, "c" * 12]
    left = {item["Key"] for item in s3.list_objects_v2(Bucket=out, Prefix="o/")["Contents"]}
    assert left == {f"o/runs/{r * 12}/{name}" for r in "ad" for name in outputs.FILES} | {
        "o/runs/eeeeeeeeeeee/output.txt", "o/latest/output.txt"}
