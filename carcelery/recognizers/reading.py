"""Lines of text in a picture: PP-OCR's read, read again where it is unsure or fits no plate format.

PP-OCR's detection (its thresholds lowered in crops, for small plates) finds the lines; each is cut out of the picture
(straightened, bicubic) at its own size, and its recognition model, trained on
lines 48 px high, brings it to that height (bilinear) and reads it. A
plate-like line read with less than SURE confidence is read a second time, cut
out at SECOND_HEIGHT (bicubic; the model brings it back to 48: a smoother
line), and the surer read is kept. A plate-like read that fits no plate format
takes the model's second choice for one character where that makes it fit one
(``plates.refit``). Costs and gains, measured on the development sets:
docs/recognizers.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, cast

import cv2
import numpy as np
import PIL.Image

from .imaging import MAX_SIDE
from .plates import Character, fits, letters_and_digits, plate_like, refit

if TYPE_CHECKING:
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


def surer(first: tuple[str, float], second: tuple[str, float]) -> tuple[str, float]:
    """Of two reads (text, score) of a line, the surer; the first's text where both read the same letters and digits.

    The spacing of a line read at its own size is the truer one ("LP 610 LB", not "LP610LB").
    """
    if letters_and_digits(first[0]) == letters_and_digits(second[0]):
        return first[0], max(first[1], second[1])
    return max(first, second, key=lambda read: read[1])


def recognition_model() -> Path:
    """The recognition model RapidOCR's wheel ships (PP-OCRv6 small): the one model of every read here."""
    import rapidocr

    return Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_rec_small.onnx"


class Recognition:
    """PP-OCR's recognition model on onnxruntime, for one line: its read, and each character's second choice.

    RapidOCR answers a line's best read only; a plate's format needs the
    model's second choices. The model file is the one RapidOCR's engines are
    given, its input prepared as RapidOCR prepares it: 48 px high, scaled to
    [-1, 1], padded to 320 px wide at least.

    Parameters:
      path: the ONNX model, its alphabet in its metadata (``character``).
      threads: onnxruntime's threads within a call (0: its default).
    """

    HEIGHT, MIN_WIDTH = 48, 320

    def __init__(self, path: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        # CTC's blank first, a space last: as the model was trained (RapidOCR's CTCLabelDecode).
        self._alphabet = ["", *self._session.get_modelmeta().custom_metadata_map["character"].splitlines(), " "]
        self._letters = np.array([i for i, c in enumerate(self._alphabet) if len(c) == 1 and "A" <= c <= "Z"])
        self._digits = np.array([i for i, c in enumerate(self._alphabet) if len(c) == 1 and "0" <= c <= "9"])

    def __call__(self, line: np.ndarray) -> tuple[str, float, list[Character]]:
        """The read of ``line`` (BGR, upright): its text, its confidence (0-1), its characters with second choices."""
        height, width = line.shape[:2]
        scaled = max(1, math.ceil(self.HEIGHT * width / height))
        batch = np.zeros((1, 3, self.HEIGHT, max(self.MIN_WIDTH, scaled)), dtype=np.float32)
        batch[0, :, :, :scaled] = cv2.resize(line, (scaled, self.HEIGHT)).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1
        return self.decode(self._session.run(None, {self._input: batch})[0][0])

    def decode(self, posteriors: np.ndarray) -> tuple[str, float, list[Character]]:
        """CTC's greedy read of ``posteriors`` (frames x alphabet): each frame's best, repeats and blanks dropped."""
        best = posteriors.argmax(axis=1)
        starts = [t for t in range(len(best)) if best[t] != 0 and (t == 0 or best[t] != best[t - 1])]
        characters, scores = [], []
        for start in starts:
            end = start + 1
            while end < len(best) and best[end] == best[start]:
                end += 1
            text = self._alphabet[best[start]]
            scores.append(float(posteriors[start, best[start]]))
            if "0" <= text <= "9":  # a digit's second choice is a letter; a letter's, a digit
                others = self._letters
            elif text.isascii() and text.isalpha():
                others = self._digits
            else:
                characters.append(Character(text))
                continue
            frames = posteriors[start:end][:, others]
            frame, column = np.unravel_index(frames.argmax(), frames.shape)
            characters.append(Character(text, self._alphabet[others[column]], float(frames[frame, column])))
        return "".join(c.text for c in characters), float(np.mean(scores)) if scores else 0.0, characters


class LineReader:
    """PP-OCR's detection and recognition (RapidOCR's ONNX models, no direction classifier), with a second read.

    Pictures are read as PP-OCR reads whole images by default (enlarged to 736
    px on the short side), or as sized (crops, which callers size). The engines
    are made once; their models load on first use.

    Parameters:
      threads: onnxruntime's threads within a call (0: its default).
      formats: the plate formats a plate-like read is brought to (``plates.refit``).
    """

    def __init__(self, threads: int, formats: Sequence[str]):
        from rapidocr import RapidOCR

        model = recognition_model()  # given to RapidOCR too, so that no upgrade of its defaults sets them apart
        engine = {
            "Global.log_level": "error",
            "Global.use_cls": False,
            "Rec.model_path": str(model),
            # RapidOCR spells onnxruntime's default -1.
            "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._whole = RapidOCR(params=engine)
        # Crops, whose plates may be small: the detection's thresholds lowered.
        self._as_sized = RapidOCR(params={**engine, "Det.limit_type": "max", "Det.limit_side_len": 2 * MAX_SIDE,
                                          "Det.thresh": DET_THRESH, "Det.box_thresh": DET_BOX_THRESH})
        self._recognition = Recognition(model, threads)
        self._formats = tuple(formats)

    def __call__(self, pic: PIL.Image.Image, as_sized: bool = True) -> list[Line]:
        """The lines of text in ``pic``, top to bottom (as sized, or enlarged as PP-OCR does by default)."""
        pixels = np.ascontiguousarray(np.asarray(pic.convert("RGB"))[:, :, ::-1])  # PP-OCR takes BGR, as OpenCV
        # RapidOCR types its answer as any step's; with detection and recognition it is the whole read.
        read = cast("RapidOCROutput", (self._as_sized if as_sized else self._whole)(pixels))
        if read.txts is None or read.boxes is None or read.scores is None:
            return []
        return [self._again(pixels, corners, text, score) if plate_like(text) else Line(corners, text, score)
                for corners, text, score in zip(read.boxes, read.txts, map(float, read.scores), strict=True)]

    def _again(self, pixels: np.ndarray, corners: np.ndarray, text: str, score: float) -> Line:
        """A plate-like line read ``text`` at ``score``: read again where unsure, and brought to a format where it fits none."""
        reads: list[tuple[str, float, list[Character]]] = []
        if score < SURE:
            reads.append(self._recognition(cut_out(pixels, corners, SECOND_HEIGHT)))
            text, score = surer((text, score), reads[-1][:2])
        if not self._formats or fits(text, self._formats):
            return Line(corners, text, score)
        # The characters of a read of what was kept: the second read's, or one at the line's own size.
        same = [read for read in reads if letters_and_digits(read[0]) == letters_and_digits(text)]
        own = same[0] if same else self._recognition(cut_out(pixels, corners))
        if letters_and_digits(own[0]) == letters_and_digits(text):
            text = refit(own[2], self._formats) or text
        return Line(corners, text, score)
