"""The outputs' index: a run's update gives the files a rebuild would, and reads the segments it touches alone."""

import dataclasses
import random

import pytest

from carcelery.pipeline import index, records, results
from carcelery.recognizers import CAR, Label, TextLine
from carcelery.settings import ConfigError, settings

WHERE = index.Location("outputs-bucket", "o/index/d/")  # in the ``index_s3`` fixture's bucket


class Held:
    """A local copy and the segments of an index at WHERE, as one run after another leaves them."""

    def __init__(self, folder):
        self.copy, self.segments = folder, []
        folder.mkdir(parents=True, exist_ok=True)

    def rebuild(self, found):
        self.segments = index.rebuild(self.copy, WHERE, found)

    def update(self, changes):
        self.segments = index.update(self.copy, WHERE, self.segments, changes)

    def join(self, into):
        return index.join(self.copy, index.Manifest("e", 1, self.segments), into)


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


def test_updates_give_the_files_a_rebuild_gives(tmp_path, small, index_s3):
    rng = random.Random(7)
    store = {f"{n}.jpg": record(f"{n}.jpg", f"T{n}", car=n % 3 != 0) for n in range(0, 300, 2)}
    held = Held(tmp_path / "i")
    held.rebuild(natural(store))
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
        held.update(changes)
        counts = held.join(tmp_path / "updated")
        results.write(tmp_path / "whole", natural(store))
        assert files(tmp_path / "updated") == files(tmp_path / "whole"), f"step {step}"
        assert counts["images"] == len(store) and counts["lines"] == sum(bool(r["car"]) for r in store.values())
    sizes = [s["images"] for s in held.segments]
    assert max(sizes) <= 2 * index.SEGMENT and min(sizes) >= 1


def test_removing_every_record_leaves_empty_files(tmp_path, small, index_s3):
    keys = [f"{n}.jpg" for n in range(50)]
    held = Held(tmp_path / "i")
    held.rebuild([record(k) for k in keys])
    held.update({records.order(k): None for k in keys})
    counts = held.join(tmp_path / "out")
    assert files(tmp_path / "out") == ("", "") and counts["images"] == 0 and held.segments == []


def test_a_run_of_ten_reads_the_segments_it_falls_in_not_the_bucket(tmp_path, monkeypatch, index_s3):
    monkeypatch.setattr(index, "SEGMENT", 100)  # 50 segments written to S3 first
    held = Held(tmp_path / "i")
    held.rebuild(record(f"{n}.jpg") for n in range(5000))
    read = []
    reading = results.read_records
    monkeypatch.setattr(results, "read_records", lambda folder: (read.append(1) or r for r in reading(folder)))
    new = {f"{n}a.jpg": record(f"{n}a.jpg") for n in range(2000, 2010)}
    held.update({records.order(k): r for k, r in new.items()})
    held.join(tmp_path / "out")
    assert 0 < len(read) <= 2 * index.SEGMENT, f"{len(read)} records read for a run of 10 in a store of 5,000"
    lines = (tmp_path / "out" / results.OUTPUT).read_text().splitlines()
    assert len(lines) == 5010 and lines[2000:2003] == ["2000.jpg: ABC 123", "2000a.jpg: ABC 123", "2001.jpg: ABC 123"]


def test_the_location_is_under_the_output_uri_or_the_emulators_and_on_aws_needs_the_uri(monkeypatch):
    where = index.location("images", "cars/", "s3://outs/carcelery/")
    assert where.bucket == "outs" and where.prefix.startswith("carcelery/index/") and where.prefix.endswith("/")
    assert index.location("images", "", "").bucket == index.EMULATOR_BUCKET
    assert index.location("images", "cars/", "s3://outs/") != index.location("images", "", "s3://outs/")
    monkeypatch.setattr(index, "settings", dataclasses.replace(settings, target="aws"))
    with pytest.raises(ConfigError, match="CARCELERY_OUTPUT_URI"):
        index.location("images", "", "")
