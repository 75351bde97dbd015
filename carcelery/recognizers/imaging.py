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
# Nor more memory than this: what decoding an image allocates (``decode_bytes``), its
# peak a little over it. A 7999x7999 RGBA PNG (0.3 MB as a file, 64 Mpx, under MAX_PIXELS)
# would take 1 GB. Allows an RGB PNG of 33 Mpx, a transparent one of 13, a grey one of 53, and a JPEG
# of any size JPEG allows (decoded reduced, to 2 to 4 Mpx).
MAX_DECODE_BYTES = 256 * 1024 * 1024
# Neither model gains from more pixels than this: the detector sees 300x300,
# and PP-OCR limits its input's long side to 2000.
MAX_SIDE = 2000


def on_white(pic: PIL.Image.Image) -> PIL.Image.Image:
    """``pic`` as RGB, its transparent pixels shown on white, as a viewer shows them.

    The colour hidden under a transparent pixel is arbitrary and misleads OCR
    (the seed's 7.jpg reads "LP 610 LBS" on black).
    """
    if _transparent(pic):
        rgba = pic.convert("RGBA")
        pic = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pic.alpha_composite(rgba)
    return pic.convert("RGB")


class TooLarge(ImageError):
    """The image would take more pixels (MAX_PIXELS) or memory (MAX_DECODE_BYTES) to decode than allowed."""


def _stored_bytes(mode: str) -> int:
    # Bytes per pixel as Pillow holds an image: 1 for 1, L, P; 2 for the 16-bit modes; 4 for the others (RGB too).
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _transparent(pic: PIL.Image.Image) -> bool:
    return pic.mode in ("RGBA", "LA", "PA") or "transparency" in pic.info


def decode_bytes(pic: PIL.Image.Image) -> int:
    """What decoding ``pic`` (opened, not loaded) to RGB allocates, in bytes.

    Its pixels in their mode, the RGB copy, and for a transparent image
    ``on_white``'s three RGBA images (the image as RGBA, the white, the two composed).
    """
    per_pixel = _stored_bytes(pic.mode) + 4 + (12 if _transparent(pic) else 0)
    return pic.width * pic.height * per_pixel


def _too_large(name: str, width: int, height: int) -> TooLarge:
    return TooLarge(f"{name} is {width}x{height} pixels, over the local backend's limit of {MAX_PIXELS:,}; "
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
        if (cost := decode_bytes(pic)) > MAX_DECODE_BYTES:
            raise TooLarge(f"{image.name} is {width}x{height} pixels of {pic.mode}: decoding it would take "
                           f"{cost / 2**20:,.0f} MiB, over the limit of {MAX_DECODE_BYTES / 2**20:,.0f} MiB; "
                           f"downscale it (e.g. to {MAX_SIDE} px on its long side) or save it as JPEG")
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
