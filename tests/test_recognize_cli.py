import json

import pytest

from carcelery.embedded.demo import Stack


@pytest.mark.integration
def test_json_lines_per_image(seed_dir, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"")
    done = Stack(tmp_path).run("carcelery.commands.recognize", "--json", str(seed_dir / "7.jpg"),
                               str(seed_dir / "8.jpg"), str(tmp_path / "bad.jpg"))
    assert done.returncode == 1, "a failed image makes the exit code 1"
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in rows] == ["7.jpg", "8.jpg", "bad.jpg"]
    assert rows[0]["car"] is True and 0 <= rows[0]["car_confidence"] <= 100
    [plate] = rows[0]["text"]
    assert plate["text"].endswith("LP 610 LB"), "read where the pipeline reads: the car"
    assert rows[1]["car"] is False and rows[1]["labels"]
    assert "empty" in rows[2]["error"]["reason"]


@pytest.mark.integration
def test_human_readable(seed_dir, tmp_path):
    done = Stack(tmp_path).run("carcelery.commands.recognize", str(seed_dir / "4.jpg"))
    assert done.returncode == 0
    assert done.stdout.startswith("4.jpg: car (car confidence")
    assert "text  'YHI9 " in done.stdout
