"""Lines of text in a picture: PP-OCR's read, and a second read of a plate-like line where it is unsure.

PP-OCR's detection (its thresholds lowered in crops, for small plates) finds the lines; each is cut out of the picture
(straightened, bicubic) at its own size, and its recognition model, trained on
lines 48 px high, brings it to that height (bilinear) and reads it. A
plate-like line read with less than SURE confidence is read a second time, cut
out at SECOND_HEIGHT (bicubic; the model brings it back to 48: a smoother
line), and the surer read is kept. Costs and gains, measured on the
development set and its scaled-down variant: docs/recognizers.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, cast

import cv2
import numpy as np
import PIL.Image

from .imaging import MAX_SIDE

if TYPE_CHECKING:
    from rapidocr.ch_ppocr_rec.typings import TextRecOutput
    from rapidocr.utils.output import RapidOCROutput

# Below this confidence (0-1) a plate-like line is read a second time, cut out this high.
SURE = 0.95
SECOND_HEIGHT = 64
# PP-OCR's detection keeps pixels it scores above THRESH as text, and boxes whose mean score is above
# BOX_THRESH (its defaults: 0.3, 0.5). Lower, it finds the small, blurred plates of street and parking
# cameras that it otherwise misses; what it adds that is not text reads as nothing, or as a few letters.
DET_THRESH = 0.2
DET_BOX_THRESH = 0.3


@dataclass(frozen=True)
class Line:
    """A line read: its corners in the picture (4x2, pixels), its text, and the confidence of the read (0-1)."""

    corners: np.ndarray
    text: str
    score: float


def cut_out(pixels: np.ndarray, corners: np.ndarray, height: int | None = None) -> np.ndarray:
    """The quadrilateral ``corners`` of ``pixels`` as an upright rectangle ``height`` px high (bicubic; None: as tall as it is)."""
    corners = corners.astype(np.float32)
    width = max(float(np.linalg.norm(corners[0] - corners[1])), float(np.linalg.norm(corners[2] - corners[3])))
    tall = max(float(np.linalg.norm(corners[0] - corners[3])), float(np.linalg.norm(corners[1] - corners[2])), 1.0)
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
    """PP-OCR's detection and recognition (RapidOCR's ONNX models, no direction classifier), with a second read.

    Pictures are read as PP-OCR reads whole images by default (enlarged to 736
    px on the short side), or as sized (crops, which callers size). The engines
    are made once; their models load on first use.

    Parameters:
      engine: RapidOCR parameters every engine shares (threads, log level).
      plate_like: whether a text is shaped like a plate (those are read twice where unsure).
    """

    def __init__(self, engine: dict, plate_like: Callable[[str], bool]):
        from rapidocr import RapidOCR

        engine = {**engine, "Global.use_cls": False}
        self._whole = RapidOCR(params=engine)
        # Crops, whose plates may be small: the detection's thresholds lowered.
        self._as_sized = RapidOCR(params={**engine, "Det.limit_type": "max", "Det.limit_side_len": 2 * MAX_SIDE,
                                          "Det.thresh": DET_THRESH, "Det.box_thresh": DET_BOX_THRESH})
        # One line at a time, as given: already cut out at the height wanted.
        self._again = RapidOCR(params={**engine, "Global.use_det": False, "Global.use_preprocess_img": False})
        self._plate_like = plate_like

    def __call__(self, pic: PIL.Image.Image, as_sized: bool = True) -> list[Line]:
        """The lines of text in ``pic``, top to bottom (as sized, or enlarged as PP-OCR does by default)."""
        pixels = np.ascontiguousarray(np.asarray(pic.convert("RGB"))[:, :, ::-1])  # PP-OCR takes BGR, as OpenCV
        # RapidOCR types its answer as any step's; with detection and recognition it is the whole read.
        read = cast("RapidOCROutput", (self._as_sized if as_sized else self._whole)(pixels))
        if read.txts is None or read.boxes is None or read.scores is None:
            return []
        lines = []
        for corners, text, score in zip(read.boxes, read.txts, map(float, read.scores), strict=True):
            if score < SURE and self._plate_like(text):
                again = cast("TextRecOutput", self._again(cut_out(pixels, corners, SECOND_HEIGHT)))  # recognition only
                if again.txts:
                    text, score = surer((text, score), (again.txts[0], float(again.scores[0])))
            lines.append(Line(corners, text, score))
        return lines
