"""The embedded default: offline models, loaded once per process.

- Objects: SSD MobileNet v2 COCO (8-bit quantized TFLite) on ai-edge-litert.
- Text: RapidOCR's PP-OCR ONNX models (detection, recognition), shipped inside the rapidocr wheel.

The car decision (docs/recognizers.md; figures from ``python -m carcelery.commands.evaluate``):

- COCO's ``car``, ``truck`` and ``bus`` all count as a car, as Rekognition's
  ``Car`` does: COCO files pickups and SUVs under truck, vans under bus.
- The detector looks twice: at the image, and at the image in the middle of a
  grey square 1.4 times its long side. A car cut by the frame (a close-up) is
  seen whole, and scores 0.84-0.98 there instead of 0.4-0.66.
- A box covering at least half the image counts 1.75 times its score (0.4
  reaches the threshold of 70): close-ups score low in this detector, and
  its false detections are small boxes, not large ones.
- Where neither look finds a car, a number plate does: a line of text of 4 to
  10 letters and digits, with letters and at least two digits, read at 90 %
  or more. Plates are on vehicles; signs, times and prices are not shaped so.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np
import PIL.Image

from . import weights
from .imaging import decode
from ..settings import settings
from .plates import folded, letters_and_digits, plate_like
from .reading import LineReader
from .base import CAR, LICENSE_PLATE, Box, Image, Label, Recognizer, TextLine, car_confidence, threshold

# Detections below this score are noise, not labels.
MIN_SCORE = 0.4
# COCO's classes that Rekognition calls Car (its truck holds pickups and SUVs, its bus vans).
VEHICLES = frozenset({"Car", "Truck", "Bus"})
# The second look: the image in the middle of a square this many times its long side.
ZOOM_OUT = 1.4
ZOOM_OUT_FILL = (114, 114, 114)
# A box covering this share of the image or more is a close-up; its score counts CLOSE_UP_WEIGHT times.
CLOSE_UP = 0.5
CLOSE_UP_WEIGHT = 1.75
PLATE_MIN_CONFIDENCE = 90.0
# Where the text of a region is read: the region with a margin of this share of its size each side
# (a vehicle's box often ends at the bumper that holds the plate), scaled so that its long side is
# CROP_SIDE (a small car enlarged, a large one reduced). On the development set, 640 reads as many
# plates as 960 within +-2 of 114, at half its CPU time (docs/recognizers.md).
CROP_MARGIN = 0.2
CROP_SIDE = 640
# The plate zone: where a car's plate is, as fractions of its box (left, top, right, bottom; below
# the bumper by a tenth). A street camera's car is reduced in its crop, and its plate with it (a
# 119 px plate to 64 px in a 1280 px frame), under what PP-OCR's detection finds: where the largest
# car has no sure plate read, its zone is read again from the decoded image, PLATE_ZONE_SIDE px wide
# (enlarged at most twice; at 480, 90-120 px plates of 400-800 px cars stay under what the detection
# finds; 960 reads no more), at most PLATE_ZONE_PIXELS large (a close-up's zone is large, and so is
# its plate), and not where the crop already saw the car as large. Other cars are not: the labeled
# plates of the development sets gain nothing from them, and each costs a detection. Figures:
# docs/recognizers.md.
PLATE_ZONE = (0.1, 0.4, 0.9, 1.1)
PLATE_ZONE_SIDE = 720
PLATE_ZONE_MAX_ZOOM = 2.0
PLATE_ZONE_PIXELS = 720 * 540
# The whole image, as a region of itself.
WHOLE = Box(0.0, 0.0, 1.0, 1.0)
# The plate look reads the whole image at most this large: it is for close-ups, whose plates are large.
PLATE_LOOK_SIDE = 960


def _box(left, top, right, bottom) -> Box:
    """A Box from corners given as fractions, clipped to the image."""
    left, top, right, bottom = (min(1.0, max(0.0, round(float(v), 4))) for v in (left, top, right, bottom))
    return Box(left, top, round(right - left, 4), round(bottom - top, 4))


def zoomed_out(pic: PIL.Image.Image) -> tuple[PIL.Image.Image, Box]:
    """``pic`` in the middle of a grey square ZOOM_OUT times its long side, and where it sits in it."""
    width, height = pic.size
    side = int(max(width, height) * ZOOM_OUT)
    canvas = PIL.Image.new("RGB", (side, side), ZOOM_OUT_FILL)
    left, top = (side - width) // 2, (side - height) // 2
    canvas.paste(pic, (left, top))
    return canvas, Box(left / side, top / side, width / side, height / side)


def crop(pic: PIL.Image.Image, region: Box) -> tuple[PIL.Image.Image, Box]:
    """``region`` of ``pic`` with a margin, its long side scaled to CROP_SIDE; and the part of ``pic`` it shows."""
    dx, dy = region.width * CROP_MARGIN, region.height * CROP_MARGIN
    part, frame = cut(pic, region.left - dx, region.top - dy, region.left + region.width + dx,
                      region.top + region.height + dy)
    scale = CROP_SIDE / max(part.size)
    return part.resize((max(1, round(part.width * scale)), max(1, round(part.height * scale)))), frame


def cut(pic: PIL.Image.Image, left: float, top: float, right: float, bottom: float) -> tuple[PIL.Image.Image, Box]:
    """The part of ``pic`` between the fractions given (clipped to it, at least a pixel), and where it is in ``pic``."""
    width, height = pic.size
    x0, y0 = int(max(0.0, left) * width), int(max(0.0, top) * height)
    x1, y1 = max(x0 + 1, int(min(1.0, right) * width)), max(y0 + 1, int(min(1.0, bottom) * height))
    return pic.crop((x0, y0, x1, y1)), Box(x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)


def merged(regions: Sequence[Box]) -> list[Box]:
    """``regions`` with those that overlap joined into their bounding box: each part of the image read once."""
    def overlapping(new, boxes):
        return [b for b in boxes if b[0] < new[2] and new[0] < b[2] and b[1] < new[3] and new[1] < b[3]]

    boxes: list[tuple[float, ...]] = []
    for region in regions:
        new = (region.left, region.top, region.left + region.width, region.top + region.height)
        while joined := overlapping(new, boxes):  # the joined box may reach boxes the new one did not
            boxes = [b for b in boxes if b not in joined]
            new = tuple(f(values) for f, values in zip((min, min, max, max), zip(new, *joined, strict=True), strict=True))
        boxes.append(new)
    return [_box(*b) for b in boxes]


class LocalRecognizer(Recognizer):
    name = "local"
    car_threshold = 70.0

    def __init__(self, model_dir=None, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        threads = settings.model_threads if threads is None else threads
        # 0: each library's default (several threads per image), which TFLite
        # spells None and onnxruntime -1.
        default = threads <= 0
        model_dir = weights.require(model_dir or settings.model_dir)
        self._detector = Interpreter(model_path=str(model_dir / weights.DETECTOR), num_threads=None if default else threads)
        self._detector.allocate_tensors()
        # One interpreter per process, shared by the threads pool's threads: its
        # input and output tensors are the interpreter's, so one image at a time.
        # (RapidOCR keeps a call's state in its locals, and onnxruntime's run is
        # thread-safe: the OCR engines need no lock.)
        self._detector_lock = threading.Lock()
        self._input = self._detector.get_input_details()[0]
        self._outputs = [d["index"] for d in self._detector.get_output_details()]
        self._names = {}
        for line in (model_dir / weights.LABELS).read_text().splitlines():
            index, name = line.split(maxsplit=1)
            self._names[int(index)] = name.strip().title()
        # Without PP-OCR's direction classifier: photos of cars are upright, and
        # it turned plates upside down ("OUH-9191" read "1616-HN0"; docs/recognizers.md).
        self._ocr = LineReader(0 if default else threads, settings.plate_formats)
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def _detect(self, pic: PIL.Image.Image, frame: Box) -> list[tuple[str, float, Box]]:
        """The detector's (name, score, box) in ``pic``, boxes as fractions of ``frame``, the part of ``pic`` that is the image."""
        _, height, width, _ = self._input["shape"]
        pixels = np.asarray(pic.resize((width, height)), dtype=np.uint8)[None]
        with self._detector_lock:
            self._detector.set_tensor(self._input["index"], pixels)
            self._detector.invoke()
            boxes, classes, scores, count = [self._detector.get_tensor(i)[0] for i in self._outputs]  # copies
        found = []
        for (top, left, bottom, right), cls, score in zip(boxes[:int(count)], classes, scores, strict=False):  # count boxes, more classes
            if score < MIN_SCORE:
                continue
            found.append((self._names.get(int(cls), str(int(cls))), float(score),
                          _box((left - frame.left) / frame.width, (top - frame.top) / frame.height,
                               (right - frame.left) / frame.width, (bottom - frame.top) / frame.height)))
        return found

    def labels(self, image: Image) -> list[Label]:
        pic = decode(image)
        detections = self._detect(pic, WHOLE) + self._detect(*zoomed_out(pic))
        found: dict[str, Label] = {}

        def add(name: str, confidence: float, box: Box | None) -> None:
            old = found.get(name)
            confidence = round(min(100.0, confidence), 2)
            found[name] = Label(name, max(confidence, old.confidence) if old else confidence,
                                (old.boxes if old else ()) + ((box,) if box is not None else ()))

        for name, score, box in detections:
            if name in VEHICLES:
                close_up = box.width * box.height >= CLOSE_UP
                add(CAR, score * 100 * (CLOSE_UP_WEIGHT if close_up else 1.0), box)
            if name != CAR:  # a truck or a bus keeps its own label too, as Rekognition's Truck
                add(name, score * 100, box)
        if car_confidence(list(found.values())) < self._threshold():
            small = pic.copy()
            small.thumbnail((PLATE_LOOK_SIDE, PLATE_LOOK_SIDE))
            for line in self._lines(self._ocr, small, WHOLE):
                if plate_like(line.text) and line.confidence >= PLATE_MIN_CONFIDENCE:
                    add(LICENSE_PLATE, line.confidence, line.box)
                    add(CAR, line.confidence, line.box)
        return sorted(found.values(), key=lambda label: -label.confidence)

    def _threshold(self) -> float:
        return threshold(self, settings.car_threshold)

    def text(self, image: Image, regions: Sequence[Box] = ()) -> list[TextLine]:
        return self._read(decode(image), regions)

    def _read(self, pic: PIL.Image.Image, regions: Sequence[Box]) -> list[TextLine]:
        if not regions:
            return self._lines(self._ocr, pic, WHOLE, as_sized=False)
        parts = sorted((crop(pic, region) for region in merged(regions)), key=lambda part: part[1].top)
        lines = [line for part, frame in parts for line in self._lines(self._ocr, part, frame)]
        car = max(regions, key=lambda r: r.width * r.height)
        x, y = car.left + car.width / 2, car.top + car.height / 2
        # The scale its crop read the car at (the crop of the merged region that holds it; 0 for a
        # degenerate box no crop holds: its zone is read).
        scale = next((part.width / (frame.width * pic.width) for part, frame in parts
                      if frame.left <= x <= frame.left + frame.width and frame.top <= y <= frame.top + frame.height), 0.0)
        return lines + self._plate_zone(pic, car, scale, lines)

    def _plate_zone(self, pic: PIL.Image.Image, car: Box, scale: float, lines: list[TextLine]) -> list[TextLine]:
        """Plate-like lines (one digit suffices) of ``car``'s plate zone, read larger than its crop (at ``scale``) did, if ``lines`` hold no sure plate there."""
        zone = _box(*(edge + fraction * size for edge, fraction, size in zip(
            (car.left, car.top, car.left, car.top), PLATE_ZONE, (car.width, car.height) * 2, strict=True)))

        def within(line: TextLine) -> bool:
            if line.box is None:
                return False
            x, y = line.box.left + line.box.width / 2, line.box.top + line.box.height / 2
            return car.left <= x <= car.left + car.width and car.top <= y <= zone.top + zone.height

        if any(within(line) and plate_like(line.text) and line.confidence >= PLATE_MIN_CONFIDENCE for line in lines):
            return []
        part, frame = cut(pic, zone.left, zone.top, zone.left + zone.width, zone.top + zone.height)
        zoom = min(max(1.0, min(PLATE_ZONE_MAX_ZOOM, PLATE_ZONE_SIDE / part.width)),
                   (PLATE_ZONE_PIXELS / (part.width * part.height)) ** 0.5)
        if scale >= zoom:  # the crop saw the plate as large: a close-up, nothing to gain
            return []
        part = part.resize((max(1, round(part.width * zoom)), max(1, round(part.height * zoom))), PIL.Image.Resampling.BICUBIC)
        read = {folded(letters_and_digits(line.text)) for line in lines}  # YH19 0TZ is the crop's YHI9 OTZ again
        return [line for line in self._lines(self._ocr, part, frame)
                if plate_like(line.text, digits=1) and folded(letters_and_digits(line.text)) not in read]

    @staticmethod
    def _lines(reader: LineReader, part: PIL.Image.Image, frame: Box, as_sized: bool = True) -> list[TextLine]:
        """The lines ``reader`` reads in ``part``, an image of ``frame`` (a part of the whole), boxed in the whole."""
        width, height = part.size
        lines = []
        for line in reader(part, as_sized):
            xs = frame.left + line.corners[:, 0] / width * frame.width
            ys = frame.top + line.corners[:, 1] / height * frame.height
            lines.append(TextLine(line.text, round(line.score * 100, 2), _box(xs.min(), ys.min(), xs.max(), ys.max())))
        return lines
