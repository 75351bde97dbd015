"""The noop recognizer answers as docs/recognizers.md says: every image a car, its text the line NOOP."""

from pathlib import Path

import pytest

from carcelery.recognizers import CAR, Image, Label, TextLine
from carcelery.recognizers.noop import NoopRecognizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "recognizers.md"


def test_noop_answers_a_car_with_the_text_noop_without_reading_the_image():
    image = Image("any.jpg", lambda: pytest.fail("the noop recognizer reads no bytes"))
    noop = NoopRecognizer()
    assert noop.labels(image) == [Label(CAR, 100.0)]
    assert noop.text(image) == [TextLine("NOOP", 100.0)]
    bullet = DOC.read_text().split("\n- `noop`", 1)[1].split("\n- ", 1)[0]
    assert "every image a car" in bullet and "`NOOP`" in bullet
