"""A recognizer that waits like a remote service, to measure the pipeline as it runs on Rekognition.

Each call waits ``CARCELERY_LATENCY`` seconds (± ``CARCELERY_LATENCY_JITTER``)
and uses no CPU; with ``CARCELERY_THROTTLE`` set, that fraction of calls fails
as Rekognition does over its quota (a ``ThrottlingException``, which the tasks
retry). The answers depend on the image's name only, so that runs compare and
output.txt is the same from run to run: about half the images hold a car, and
about three cars in four carry a plate.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Sequence

from botocore.exceptions import ClientError

from ..settings import settings
from .base import CAR, Box, Image, Label, Recognizer, TextLine

PLATE_BOX = Box(0.4, 0.7, 0.2, 0.08)
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _digest(image: Image) -> bytes:
    return hashlib.sha256(image.name.encode()).digest()


def is_car(image: Image) -> bool:
    return _digest(image)[0] % 2 == 0


def plate(image: Image) -> str | None:
    """The text on the car of ``image``, or None for a car without a plate in view (one in four)."""
    digest = _digest(image)
    if digest[1] % 4 == 0:
        return None
    letters = "".join(LETTERS[b % len(LETTERS)] for b in digest[2:5])
    return f"{letters} {int.from_bytes(digest[5:7], 'big') % 10000:04d}"


class LatencyRecognizer(Recognizer):
    name = "latency"
    car_threshold = 90.0  # as Rekognition's

    def __init__(self, latency: float | None = None, jitter: float | None = None, throttle: float | None = None):
        self.latency = settings.latency if latency is None else latency
        self.jitter = settings.latency_jitter if jitter is None else jitter
        self.throttle = settings.throttle if throttle is None else throttle

    def _wait(self, operation: str) -> None:
        time.sleep(max(0.0, self.latency + random.uniform(-self.jitter, self.jitter)))
        if random.random() < self.throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)

    def labels(self, image: Image) -> list[Label]:
        self._wait("DetectLabels")
        if is_car(image):
            return [Label(CAR, 98.5, (Box(0.2, 0.3, 0.6, 0.5),)), Label("Vehicle", 98.5)]
        return [Label("Tree", 93.0), Label("Road", 71.0)]

    def text(self, image: Image, regions: Sequence[Box] = ()) -> list[TextLine]:
        self._wait("DetectText")
        found = plate(image) if is_car(image) else None
        return [TextLine(found, 97.0, PLATE_BOX)] if found else []
