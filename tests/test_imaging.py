"""What a decode may allocate: bounded by bytes (the mode's bytes per pixel x width x height), not only by pixels."""

import io
import struct
import zlib

import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carcelery.recognizers import Image, ImageError, imaging
from carcelery.recognizers.imaging import (
    MAX_DECODE_BYTES,
    MAX_PIXELS,
    MAX_SIDE,
    TooLarge,
    decode,
    decode_bytes,
)


def png(width: int, height: int, color_type: int = 6) -> bytes:
    """A valid PNG of one colour, 8 bits per sample (colour type 6: RGBA, 2: RGB, 0: grey), made row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    samples = {0: 1, 2: 3, 6: 4}[color_type]
    packer, row, idat = zlib.compressobj(9), b"\0" + b"\x80" * (width * samples), []
    for _ in range(height):
        idat.append(packer.compress(row))
    idat.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


def test_a_small_file_that_decodes_to_a_gigabyte_is_refused_before_decoding():
    data = png(7999, 7999)  # RGBA
    assert len(data) < 1_000_000 and 7999 * 7999 <= MAX_PIXELS  # passes the pixels' limit
    with pytest.raises(TooLarge, match=r"bomb.png is 7999x7999 pixels of RGBA: decoding it would take 1,220 MiB, "
                                       r"over the limit of 256 MiB; downscale it"):
        decode(Image("bomb.png", lambda: data))


def test_a_jpeg_is_still_decoded_reduced_whatever_its_full_size_would_take():
    buf = io.BytesIO()
    PIL.Image.new("RGB", (8000, 8000), (200, 30, 30)).save(buf, "JPEG", quality=50)
    full = PIL.Image.open(io.BytesIO(buf.getvalue()))
    assert decode_bytes(full) > MAX_DECODE_BYTES  # its full size; the draft decodes a quarter of each side
    pic = decode(Image("big.jpg", lambda: buf.getvalue()))
    assert pic.size == (MAX_SIDE, MAX_SIDE) and pic.mode == "RGB"


MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "I;16"]  # the modes PNG holds


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(MODES), width=st.integers(1, 120), height=st.integers(1, 120),
       limit=st.integers(1, 120 * 120 * 20), transparency=st.booleans())
def test_an_image_is_decoded_exactly_when_its_decode_fits_the_limit(monkeypatch, mode, width, height, limit,
                                                                     transparency):
    monkeypatch.setattr(imaging, "MAX_DECODE_BYTES", limit)
    buf = io.BytesIO()
    pic = PIL.Image.new(mode, (width, height))
    # A transparent colour (tRNS): decoded through on_white as the alpha modes are.
    key = {"L": 0, "P": 0, "RGB": (0, 0, 0)}.get(mode) if transparency else None
    pic.save(buf, "PNG", **({} if key is None else {"transparency": key}))
    data = buf.getvalue()
    cost = decode_bytes(PIL.Image.open(io.BytesIO(data)))
    try:
        decoded = decode(Image("x.png", lambda: data))
    except TooLarge as exc:
        assert cost > limit, exc
    else:
        assert cost <= limit and decoded.mode == "RGB" and decoded.size == (width, height)


def test_the_refusal_is_an_image_error_the_task_records():
    assert issubclass(TooLarge, ImageError)
