"""A recognizer that answers at once, to measure the pipeline without models.

Every image holds a car (so both stages run) and the text ``NOOP``, so that
output.txt has a line per image. The image itself is never read.

For tests, ``CARCELERY_NOOP_EXIT_ON`` names an image that makes the process
recognizing it exit at once, every time: a worker-killing poison.
"""

from __future__ import annotations

import os
from typing import Sequence

from ..settings import settings
from .base import CAR, Box, Image, Label, Recognizer, TextLine


class NoopRecognizer(Recognizer):
    name = "noop"
    car_threshold = 90.0

    def labels(self, image: Image) -> list[Label]:
        if settings.noop_exit_on and image.name == settings.noop_exit_on:
            os._exit(70)  # as a crash in a model would: no exception, no result, no acknowledgement
        return [Label(CAR, 100.0)]

    def text(self, image: Image, regions: Sequence[Box] = ()) -> list[TextLine]:
        return [TextLine("NOOP", 100.0)]
