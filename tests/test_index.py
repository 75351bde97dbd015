"""The outputs' index: a run's update gives the files a rebuild would, and reads the segments it touches alone."""

import random

import pytest

from carcelery.pipeline import index, records, results
from carcelery.recognizers import CAR, Label, TextLine


def record(key, text="ABC 123", car=True):
    made = results.detection(key, bucket="b", key=key, etag="e", labels=[Label(CAR, 99.0 if car else 1.0)], threshold=50)
    return results.with_text(made, [TextLine(text, 99.0)] if car else [])


def natural(found):
    return sorted(found.values(), key=lambda r: results.natural_key(r["key"]))


def files(folder):
    return (folder / results.OUTPUT).read_text(), (folder / results.RESULTS).read_text()


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(index, "SEGMENT", 20)


def test_updates_give_the_files_a_rebuild_gives(tmp_path, small):
    rng = random.Random(7)
    store = {f"{n}.jpg": record(f"{n}.jpg", f"T{n}", car=n % 3 != 0) for n in range(0, 300, 2)}
    with index.locked(tmp_path / "i") as held:
        index.rebuild(held, natural(store))
    for step in range(30):
        changes = {}
        for _ in range(rng.randint(1, 12)):
            key = f"{rng.randrange(400)}.jpg"
            if rng.random() < 0.3:
                store.pop(key, None)
                changes[records.order(key)] = None
            else:
                store[key] = record(key, f"S{step}")
                changes[records.order(key)] = store[key]
        with index.locked(tmp_path / "i") as held:
            index.update(held, changes)
            counts = index.join(held, tmp_path / "updated")
        results.write(tmp_path / "whole", natural(store))
        assert files(tmp_path / "updated") == files(tmp_path / "whole"), f"step {step}"
        assert counts["images"] == len(store) and counts["lines"] == sum(bool(r["car"]) for r in store.values())
    sizes = [s["images"] for s in held.segments]
    assert max(sizes) <= 2 * index.SEGMENT and min(sizes) >= 1


def test_removing_every_record_leaves_empty_files(tmp_path, small):
    keys = [f"{n}.jpg" for n in range(50)]
    with index.locked(tmp_path / "i") as held:
        index.rebuild(held, [record(k) for k in keys])
        index.update(held, {records.order(k): None for k in keys})
        counts = index.join(held, tmp_path / "out")
    assert files(tmp_path / "out") == ("", "") and counts["images"] == 0 and held.segments == []


def test_a_run_of_ten_reads_the_segments_it_falls_in_not_the_bucket(tmp_path, monkeypatch, small):
    with index.locked(tmp_path / "i") as held:
        index.rebuild(held, (record(f"{n}.jpg") for n in range(5000)))
    read = []
    reading = results.read_records
    monkeypatch.setattr(results, "read_records", lambda folder: (read.append(1) or r for r in reading(folder)))
    new = {f"{n}a.jpg": record(f"{n}a.jpg") for n in range(2000, 2010)}
    with index.locked(tmp_path / "i") as held:
        index.update(held, {records.order(k): r for k, r in new.items()})
        index.join(held, tmp_path / "out")
    assert 0 < len(read) <= 2 * index.SEGMENT, f"{len(read)} records read for a run of 10 in a store of 5,000"
    lines = (tmp_path / "out" / results.OUTPUT).read_text().splitlines()
    assert len(lines) == 5010 and lines[2000:2003] == ["2000.jpg: ABC 123", "2000a.jpg: ABC 123", "2001.jpg: ABC 123"]
