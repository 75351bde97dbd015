from carcelery import printable
from carcelery.pipeline import results
from carcelery.recognizers import Box, Label, TextLine


def record(image, car=True, text=(), bucket="b"):
    labels = [Label("Car", 95.0 if car else 10.0, (Box(0.1, 0.1, 0.5, 0.5),))]
    r = results.detection(image, bucket=bucket, key=image, etag="e", labels=labels, threshold=90)
    return results.with_text(r, [TextLine(t, 99.0) for t in text])


def test_detection_applies_the_threshold_inclusively():
    at = results.detection("a.jpg", labels=[Label("Car", 90.0)], threshold=90)
    below = results.detection("b.jpg", labels=[Label("Car", 89.99)], threshold=90)
    none = results.detection("c.jpg", labels=[Label("Person", 99.0)], threshold=90)
    assert (at["car"], below["car"], none["car"]) == (True, False, False)
    assert none["car_confidence"] == 0.0


def test_natural_order():
    names = ["10.jpg", "2.jpg", "1.jpg", "a/11.png", "a/9.png"]
    assert sorted(names, key=results.natural_key) == ["1.jpg", "2.jpg", "10.jpg", "a/9.png", "a/11.png"]


def test_output_line_only_for_cars_with_text():
    got = [results.output_line(r) for r in (record("2.jpg", text=["LP 610", "LB"]), record("3.jpg"),
                                            record("4.jpg", car=False, text=["SIGN"]),
                                            results.failure("5.jpg", "detect", "broken"))]
    assert got == ["2.jpg: LP 610 LB", None, None, None]


def test_write_streams_the_records_and_counts_them(tmp_path):
    failures = [results.failure(f"f{n}.jpg", "detect", "broken") for n in range(results.MAX_FAILURES + 5)]

    def stream():  # a generator: write must not need a list
        yield record("2.jpg", text=["LP 610", "LB"])
        yield record("3.jpg")
        yield from failures
        yield record("10.jpg", text=["X 1"])

    counts = results.write(tmp_path, stream())
    assert (tmp_path / "output.txt").read_text() == "2.jpg: LP 610 LB\n10.jpg: X 1\n"
    assert [r["image"] for r in results.read_records(tmp_path)][:3] == ["2.jpg", "3.jpg", "f0.jpg"]
    assert {k: counts[k] for k in ("images", "cars", "lines", "failed")} == {
        "images": 3 + len(failures), "cars": 3, "lines": 2, "failed": len(failures)}
    assert len(counts["failures"]) == results.MAX_FAILURES
    assert counts["failures"][0] == {"image": "f0.jpg", "stage": "detect", "reason": "broken"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_empty_run_writes_an_empty_output(tmp_path):
    assert results.write(tmp_path, [])["images"] == 0
    assert (tmp_path / "output.txt").read_text() == ""


HOSTILE = "x\n1.jpg: FAKE123\ry\t\x1b[31mz\x07\\w\x85\u2028.jpg"


def test_no_key_or_text_splits_or_forges_a_line_of_output(tmp_path):
    forged = record(HOSTILE, text=["AB\n9.jpg: FORGED", "C\x1b[2J"])
    results.write(tmp_path, [record("1.jpg", text=["REAL"]), forged])
    lines = (tmp_path / "output.txt").read_bytes().decode().split("\n")
    assert lines == ["1.jpg: REAL",
                     r"x\n1.jpg\x3a FAKE123\ry\t\x1b[31mz\x07\\w\x85\u2028.jpg: AB\n9.jpg: FORGED C\x1b[2J", ""]
    assert not any(ch in line for line in lines for ch in "\r\t\x1b\x07\x85\u2028")
    # The line splits at its first ": ", and the escapes are undone by printable.unprintable.
    key, _, text = lines[1].partition(results.SEPARATOR)
    assert (printable.unprintable(key), printable.unprintable(text)) == (HOSTILE, "AB\n9.jpg: FORGED C\x1b[2J")
    # results.jsonl keeps the record exact.
    assert [r["image"] for r in results.read_records(tmp_path)] == ["1.jpg", HOSTILE]


def test_printable_keeps_ordinary_text_and_is_reversible():
    for text in ["1.jpg", "dossier/voiture é 東京: 1.jpg", "a\\b", "\x00\x1f\x7f\x9f", HOSTILE]:
        escaped = printable.printable(text)
        assert escaped.isprintable() and printable.unprintable(escaped) == text
    assert printable.printable("dossier/voiture é 東京: 1.jpg") == "dossier/voiture é 東京: 1.jpg"


def test_a_pending_image_is_no_failure_in_the_files(tmp_path):
    # As the dispatcher stored a pending image before records had a status: another run's, still going.
    kept = {"image": "2.jpg", "bucket": "b", "key": "2.jpg", "etag": "e", "car": False, "car_confidence": 0.0,
            "labels": [], "text": [], "error": {"stage": "pending", "reason": "no result yet (run 0123456789ab)"}}
    counts = results.write(tmp_path, [record("1.jpg", text=["AB 1"]), kept])
    assert (counts["images"], counts["failed"], counts["failures"], counts["pending"]) == (2, 0, [], 1)
    _, pending = results.read_records(tmp_path)
    assert pending["status"] == "pending" and pending["car"] is None and "error" not in pending
