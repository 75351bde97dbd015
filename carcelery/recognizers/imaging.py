"""Decoding images safely: never more pixels than the models need, whatever the file declares.

Used by the local recognizer and by report.html's thumbnails. Pillow's own
guard against decompression bombs stays as Pillow sets it for the process
(nothing here changes a library's setting): an image over its limit is
refused with a clear message, as one over ours is.
"""

from __future__ import annotations

import io
import warnings

import PIL.Image

from .base import Image, ImageError

# Larger images are refused rather than decoded: a 20000x20000 RGB image is
# 1.2 GB of pixels. JPEGs are decoded at a reduced scale first (draft), so only
# very large non-JPEG images reach this limit.
MAX_PIXELS = 64_000_000
# Neither model gains from more pixels than this: the detector sees 300x300,
# and PP-OCR limits its input's long side to 2000.
MAX_SIDE = 2000


def on_white(pic: PIL.Image.Image) -> PIL.Image.Image:
    """``pic`` as RGB, its transparent pixels shown on white, as a viewer shows them.

    The colour hidden under a transparent pixel is arbitrary and misleads OCR
    (the seed's 7.jpg reads "LP 610 LBS" on black).
    """
    if pic.mode in ("RGBA", "LA", "PA") or "transparency" in pic.info:
        rgba = pic.convert("RGBA")
        pic = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pic.alpha_composite(rgba)
    return pic.convert("RGB")


def _too_large(name: str, width: int, height: int) -> ImageError:
    return ImageError(f"{name} is {width}x{height} pixels, over the local backend's limit of {MAX_PIXELS:,}; "
                      f"downscale it (e.g. to {MAX_SIDE} px on its long side)")


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """The size an image's header declares, read by its format's plugin alone (no pixels, no guard)."""
    PIL.Image.init()
    for format_id in PIL.Image.ID:
        factory, accept = PIL.Image.OPEN[format_id]
        if accept is None or accept(data[:16]):
            try:
                return factory(io.BytesIO(data), "").size  # as PIL.Image.open calls it: no file name
            except (OSError, SyntaxError, ValueError):
                continue
    return None


def decode(image: Image, side: int = MAX_SIDE) -> PIL.Image.Image:
    """The image as RGB, its long side at most ``side``.

    Raises:
      ImageError: empty, not an image, truncated, or too large to decode safely.
    """
    data = image.read()
    if not data:
        raise ImageError(f"{image.name} is empty (0 bytes); upload the image again")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its limit and refuses above twice that; the
            # size is checked below, after a JPEG's draft has shrunk it.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            pic: PIL.Image.Image = PIL.Image.open(io.BytesIO(data))
        pic.draft("RGB", (side, side))
        width, height = pic.size
        if width * height > MAX_PIXELS:
            raise _too_large(image.name, width, height)
        pic = on_white(pic)
    except ImageError:
        raise
    except PIL.Image.DecompressionBombError:
        raise _too_large(image.name, *(_declared_size(data) or ("?", "?"))) from None
    except PIL.UnidentifiedImageError:
        raise ImageError(f"{image.name} is not an image (not JPEG, PNG or another known format); "
                         f"remove it or replace it with a JPEG or PNG file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{image.name} is a damaged image ({exc}); upload it again") from None
    pic.thumbnail((side, side))
    return pic
