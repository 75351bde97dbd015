"""The latency recognizer: Rekognition's waiting and throttling, answers that depend on the image's name only."""

import pytest
from botocore.exceptions import ClientError

from carcelery import recognizers
from carcelery.aws import errors
from carcelery.recognizers.base import Box, Image
from carcelery.recognizers.latency import LatencyRecognizer


def image(name: str) -> Image:
    return Image(name, lambda: pytest.fail("the latency recognizer reads no bytes"))


def test_answers_are_a_deterministic_mix_of_cars_with_and_without_plates():
    first, again = LatencyRecognizer(0, 0, 0), LatencyRecognizer(0, 0, 0)
    names = [f"{n}.jpg" for n in range(400)]
    cars = [n for n in names if recognizers.car_confidence(first.labels(image(n))) >= first.car_threshold]
    plates = {n: first.text(image(n)) for n in cars}
    assert 150 < len(cars) < 250, "about half the images hold a car"
    assert 0.6 < sum(bool(lines) for lines in plates.values()) / len(cars) < 0.9, "most cars carry a plate"
    assert all(again.labels(image(n)) == first.labels(image(n)) for n in names)
    assert all(again.text(image(n), regions=[Box(0, 0, 1, 1)]) == plates[n] for n in cars)
    assert all(first.text(image(n)) == [] for n in names if n not in cars)


def test_throttled_calls_raise_what_rekognition_raises_and_tasks_retry():
    throttled = LatencyRecognizer(0, 0, throttle=1)
    for call in (throttled.labels, throttled.text):
        with pytest.raises(ClientError) as raised:
            call(image("1.jpg"))
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"
        assert errors.explain(raised.value) is None, "transient: the task retries it"
    calm = LatencyRecognizer(0, 0, throttle=0)
    assert all(calm.labels(image(f"{n}.jpg")) for n in range(200))


def test_is_a_registered_backend_configured_from_settings():
    recognizer = recognizers.get("latency")
    assert isinstance(recognizer, LatencyRecognizer)
    assert (recognizer.latency, recognizer.jitter, recognizer.throttle) == (0.3, 0.1, 0.0)
