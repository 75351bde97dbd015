import json

from carcelery import results
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


def test_output_lines_only_cars_with_text_in_natural_order():
    records = [record("10.jpg", text=["X 1"]), record("2.jpg", text=["LP 610", "LB"]),
               record("3.jpg"), record("4.jpg", car=False, text=["SIGN"]),
               results.failure("5.jpg", "detect", "broken")]
    assert results.output_lines(records) == ["2.jpg: LP 610 LB", "10.jpg: X 1"]


def test_write_is_idempotent_and_keeps_one_bucket(tmp_path):
    first = [record("1.jpg", text=["A"]), record("2.jpg")]
    assert results.write(tmp_path, "b", first) == "1.jpg: A\n"
    # The same image again replaces its record; a new image is added.
    text = results.write(tmp_path, "b", [record("1.jpg", text=["A"]), record("3.jpg", text=["C"])])
    assert text == "1.jpg: A\n3.jpg: C\n"
    assert (tmp_path / "output.txt").read_text() == text
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["image"] for line in lines] == ["1.jpg", "2.jpg", "3.jpg"]
    # Another bucket's run replaces the files.
    assert results.write(tmp_path, "other", [record("9.jpg", text=["Z"], bucket="other")]) == "9.jpg: Z\n"
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_empty_run_writes_an_empty_output(tmp_path):
    assert results.write(tmp_path, "b", []) == ""
    assert (tmp_path / "output.txt").read_text() == ""
