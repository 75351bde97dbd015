"""Lines of text in a picture: found by PP-OCR's detection, then each read, a plate-like one twice where unsure.

PP-OCR's recognition model was trained on lines 48 px high. Each line the
detection finds is cut out of the picture (straightened, bicubic) at its own
size and read (the model brings it to 48 px, bilinear), as PP-OCR does. A
plate-like line read with less than SURE confidence is read a second time, cut
out at SECOND_HEIGHT (bicubic; the model brings it back to 48: a smoother
line), and the surer read is kept. Costs and gains, measured on the
development set and its scaled-down variant: docs/recognizers.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import PIL.Image

from .imaging import MAX_SIDE

# Below this confidence (0-1) a plate-like line is read a second time, cut out this high.
SURE = 0.95
SECOND_HEIGHT = 64
# Lines read with less confidence are dropped (PP-OCR's own text_score).
MIN_SCORE = 0.5


@dataclass(frozen=True)
class Line:
    """A line read: its corners in the picture (4x2, pixels), its text, and the confidence of the read (0-1)."""

    corners: np.ndarray
    text: str
    score: float


def cut_out(pixels: np.ndarray, corners: np.ndarray, height: int | None = None) -> np.ndarray:
    """The quadrilateral ``corners`` of ``pixels`` as an upright rectangle ``height`` px high (bicubic; None: as tall as it is)."""
    corners = corners.astype(np.float32)
    width = max(np.linalg.norm(corners[0] - corners[1]), np.linalg.norm(corners[2] - corners[3]))
    tall = max(np.linalg.norm(corners[0] - corners[3]), np.linalg.norm(corners[1] - corners[2]), 1.0)
    scale = height / tall if height else 1.0
    size = (max(1, int(width * scale)), max(1, int(tall * scale)))
    target = np.array([[0, 0], [size[0], 0], [size[0], size[1]], [0, size[1]]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(corners, target)
    return cv2.warpPerspective(pixels, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def letters_and_digits(text: str) -> str:
    """``text``'s letters and digits, upper case: a plate's characters, separators and case aside."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def surer(first: tuple[str, float], second: tuple[str, float]) -> tuple[str, float]:
    """Of two reads (text, score) of a line, the surer; the first's text where both read the same letters and digits.

    The spacing of a line read at its own size is the truer one ("LP 610 LB", not "LP610LB").
    """
    if letters_and_digits(first[0]) == letters_and_digits(second[0]):
        return first[0], max(first[1], second[1])
    return max(first, second, key=lambda read: read[1])


class LineReader:
    """PP-OCR's detection and recognition (RapidOCR's ONNX models), as two engines: lines found, then read.

    Parameters:
      engine: RapidOCR parameters both engines share (threads, log level).
      plate_like: whether a text is shaped like a plate (those are read twice where unsure).
      detection: RapidOCR's ``Det.*`` parameters; by default the picture is searched as sized (callers size it).
    """

    def __init__(self, engine: dict, plate_like: Callable[[str], bool], detection: dict | None = None):
        from rapidocr import RapidOCR

        detection = detection or {"Det.limit_type": "max", "Det.limit_side_len": 2 * MAX_SIDE}
        self._find = RapidOCR(params={**engine, **detection, "Global.use_rec": False, "Global.use_cls": False})
        # One line at a time, as given: cut out at the model's height already.
        self._read = RapidOCR(params={**engine, "Global.use_det": False, "Global.use_cls": False,
                                      "Global.use_preprocess_img": False})
        self._plate_like = plate_like

    def __call__(self, pic: PIL.Image.Image) -> list[Line]:
        """The lines of text in ``pic``, top to bottom, read with at least MIN_SCORE confidence."""
        pixels = np.asarray(pic.convert("RGB"))[:, :, ::-1]  # PP-OCR's models take BGR, as OpenCV decodes
        found = self._find(pixels)
        lines = []
        for corners in found.boxes if found.boxes is not None else []:
            text, score = self._read_at(pixels, corners)
            if score < SURE and self._plate_like(text):
                text, score = surer((text, score), self._read_at(pixels, corners, SECOND_HEIGHT))
            if text.strip() and score >= MIN_SCORE:
                lines.append(Line(corners, text, score))
        return lines

    def _read_at(self, pixels: np.ndarray, corners: np.ndarray, height: int | None = None) -> tuple[str, float]:
        read = self._read(cut_out(pixels, corners, height))
        return (read.txts[0], float(read.scores[0])) if read.txts else ("", 0.0)
