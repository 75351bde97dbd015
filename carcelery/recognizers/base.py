"""The one interface every recognizer backend implements, and the types it returns.

Boxes are fractions of the image's width and height, as in Rekognition's
``BoundingBox``; confidences are percentages (0-100), as in Rekognition.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

CAR = "Car"
# Rekognition's label; the local recognizer gives it to plate-like lines of text.
LICENSE_PLATE = "License Plate"


class ImageError(Exception):
    """The image itself cannot be recognized (corrupt, too large, not an image).

    Permanent: retrying the same object gives the same answer. The message
    names the image and what to do about it.
    """


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Label:
    name: str
    confidence: float
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class TextLine:
    text: str
    confidence: float
    box: Box | None = None


@dataclass(frozen=True)
class Image:
    """An image to recognize: its name, where it lives in S3 if it does, and how to read its bytes.

    ``read`` is called only by backends that need the bytes; Rekognition
    reads an S3 object itself.
    """

    name: str
    read: Callable[[], bytes] = field(repr=False, compare=False)
    bucket: str | None = None
    key: str | None = None


def to_dict(value) -> dict:
    """A result type as plain JSON-able data."""
    return asdict(value)


class Recognizer(abc.ABC):
    """Finds labels (among them ``Car``) and lines of text in an image.

    Implementations load their models or clients once, in ``__init__``, and are
    kept per process.
    """

    #: The backend's name in CARCELERY_RECOGNIZER.
    name: str
    #: Car confidence (0-100) at or above which this backend's answer means a car.
    car_threshold: float

    @abc.abstractmethod
    def labels(self, image: Image) -> list[Label]:
        """Detect objects in ``image``.

        Parameters:
          image: the image to look at.

        Raises:
          ImageError: the image cannot be recognized (corrupt, too large, not an image).

        Returns:
          One Label per object name, with its highest confidence and the box of
          each instance found.
        """

    @abc.abstractmethod
    def text(self, image: Image, regions: Sequence[Box] = ()) -> list[TextLine]:
        """Read the lines of text in ``image`` (lines, not single words).

        Parameters:
          image: the image to read.
          regions: read only these parts of it (for instance its vehicles, see
            ``text_regions``); empty: the whole image.

        Raises:
          ImageError: the image cannot be recognized.

        Returns:
          The lines found, top to bottom, each with its confidence and box.
        """


def car_confidence(labels: list[Label]) -> float:
    """The confidence of the ``Car`` label, 0 when there is none."""
    return max((label.confidence for label in labels if label.name == CAR), default=0.0)


# Two boxes overlapping this much (their intersection over their union) are one object: the
# local detector's two looks at an object give two such boxes, which the car decision counts once
# (a label's confidence is its best box's); the report draws them once.
SAME_OBJECT = 0.5


def same_object(a: Box, b: Box) -> bool:
    """Whether boxes ``a`` and ``b`` are of one object (SAME_OBJECT)."""
    width = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    height = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    if width <= 0 or height <= 0:
        return False
    common = width * height
    return common / (a.width * a.height + b.width * b.height - common) >= SAME_OBJECT


def text_regions(labels: Sequence[Mapping[str, Any]], region: str) -> list[Box]:
    """Where a car image's text is read (CARCELERY_TEXT_REGION), from its record's labels.

    ``vehicles``: the boxes of its ``Car`` and ``License Plate`` labels; ``image``
    (or no such box): none, meaning the whole image.
    """
    if region != "vehicles":
        return []
    return [Box(**box) for label in labels if label["name"] in (CAR, LICENSE_PLATE) for box in label["boxes"]]


def threshold(recognizer: Recognizer, configured: float | None) -> float:
    """The car threshold in force: the configured one (CARCELERY_CAR_THRESHOLD), else the backend's own."""
    return configured if configured is not None else recognizer.car_threshold
