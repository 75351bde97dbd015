"""The embedded default: offline models, loaded once per process.

- Objects: SSD MobileNet v2 COCO (8-bit quantized TFLite) on ai-edge-litert.
- Text: RapidOCR's PP-OCR ONNX models, shipped inside the rapidocr wheel.

The detector's scores are not Rekognition confidences: they come in coarse
steps (0.418, 0.5, 0.582, 0.66, 0.789, 0.84, 0.91, ...) and close-ups of cars
often score 0.5-0.8. On the ten seed images the cars score 0.789-0.91, the
night street Rekognition put below 90 scores 0.66, and the car door of 6.jpg
only 0.418: 70 separates them best (9 of 10 agree with Rekognition; 6.jpg,
which holds no text, is the one miss). See README, "Recognizers".
"""

from __future__ import annotations

import io
import logging

import numpy as np
import PIL.Image

from .. import weights
from ..imaging import MAX_PIXELS, MAX_SIDE, decode, on_white  # noqa: F401 - the recognizer's decoding, shared
from ..settings import settings
from .base import Box, Image, ImageError, Label, Recognizer, TextLine

# Detections below this score are noise, not labels.
MIN_SCORE = 0.4


def _box(left, top, right, bottom) -> Box:
    """A Box from corners given as fractions, clipped to the image."""
    left, top, right, bottom = (min(1.0, max(0.0, round(float(v), 4))) for v in (left, top, right, bottom))
    return Box(left, top, round(right - left, 4), round(bottom - top, 4))


class LocalRecognizer(Recognizer):
    name = "local"
    car_threshold = 70.0

    def __init__(self, model_dir=None, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        from rapidocr import RapidOCR

        threads = settings.model_threads if threads is None else threads
        # 0: each library's default (several threads per image), which TFLite
        # spells None and onnxruntime -1.
        default = threads <= 0
        model_dir = weights.require(model_dir or settings.model_dir)
        self._detector = Interpreter(model_path=str(model_dir / weights.DETECTOR), num_threads=None if default else threads)
        self._detector.allocate_tensors()
        self._input = self._detector.get_input_details()[0]
        self._outputs = [d["index"] for d in self._detector.get_output_details()]
        self._names = {}
        for line in (model_dir / weights.LABELS).read_text().splitlines():
            index, name = line.split(maxsplit=1)
            self._names[int(index)] = name.strip().title()
        self._ocr = RapidOCR(params={
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": -1 if default else threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def labels(self, image: Image) -> list[Label]:
        pic = decode(image)
        _, height, width, _ = self._input["shape"]
        pixels = np.asarray(pic.resize((width, height)), dtype=np.uint8)[None]
        self._detector.set_tensor(self._input["index"], pixels)
        self._detector.invoke()
        boxes, classes, scores, count = (self._detector.get_tensor(i)[0] for i in self._outputs)
        found: dict[str, Label] = {}
        for (top, left, bottom, right), cls, score in zip(boxes[:int(count)], classes, scores):
            if score < MIN_SCORE:
                continue
            name = self._names.get(int(cls), str(int(cls)))
            box = _box(left, top, right, bottom)
            old = found.get(name)
            confidence = round(float(score) * 100, 2)
            found[name] = Label(name, max(confidence, old.confidence) if old else confidence,
                                (old.boxes if old else ()) + (box,))
        return sorted(found.values(), key=lambda label: -label.confidence)

    def text(self, image: Image) -> list[TextLine]:
        pic = decode(image)
        result = self._ocr(pic)
        if result.txts is None:
            return []
        width, height = pic.size
        lines = []
        for points, text, score in zip(result.boxes, result.txts, result.scores):
            xs, ys = points[:, 0] / width, points[:, 1] / height
            box = _box(xs.min(), ys.min(), xs.max(), ys.max())
            lines.append(TextLine(text, round(float(score) * 100, 2), box))
        return lines
