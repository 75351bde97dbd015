"""Labeled photos made harder: scaled down so that each plate is 50 to 100 px wide, saved as a camera would.

    python -m bench.scaled_down [--from DIR] [DIR]   # default ../shared/images/dev/br -> ~/.cache/carcelery/scaled-down/br

Street and parking cameras see plates 50 to 100 px wide, in frames saved as
JPEG at quality 70 to 85. Each photo of an openalpr-format folder (``NAME.txt``
beside ``NAME.jpg``: ``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``) is scaled
so that its plate has a width drawn from 50-100 px, and saved at a quality
drawn from 70-85; its ``.txt`` is rewritten to the new coordinates. The draws
are seeded by the photo's name: the same folder gives the same files on every
run. Nothing is committed; the photos are made again where missing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
from pathlib import Path

import PIL.Image

from carcelery.embedded.demo import SEED_IMAGES

DEFAULT_SOURCE = SEED_IMAGES.parent / "dev" / "br"
DEFAULT_DIR = Path("~/.cache/carcelery/scaled-down").expanduser()
PLATE_WIDTHS = (50, 100)
JPEG_QUALITIES = (70, 85)
# Part of each draw's seed: change it to draw another variant of the same photos.
SEED = "scaled-down-1"


class SourceError(ValueError):
    """A truth file is not in openalpr's format, or its photo is missing."""


def draws(name: str) -> tuple[int, int]:
    """The plate width and the JPEG quality drawn for the photo ``name``: the same on every run."""
    rng = random.Random(hashlib.sha256(f"{SEED}:{name}".encode()).digest())
    return rng.randint(*PLATE_WIDTHS), rng.randint(*JPEG_QUALITIES)


def truth(path: Path) -> tuple[str, int, int, int, int, str]:
    """The fields of the truth file ``path``: photo's name, plate's box (x, y, w, h in pixels), plate.

    Raises:
      SourceError: not ``NAME<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``.
    """
    line = path.read_text(encoding="utf-8").strip()
    fields = line.split("\t")
    if len(fields) != 6 or not all(f.lstrip("-").isdigit() for f in fields[1:5]):
        raise SourceError(f"{path}: not NAME<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE: {line!r}")
    x, y, w, h = map(int, fields[1:5])
    return fields[0], x, y, w, h, fields[5]


def scale_down(photo: Path, name: str, x: int, y: int, w: int, h: int, plate: str) -> tuple[bytes, str]:
    """``photo`` scaled so that its plate has the drawn width, as JPEG bytes; and its truth line, saved as NAME.jpg.

    A photo whose plate is narrower than the drawn width is kept at its size (only recompressed).
    """
    width, quality = draws(name)
    with PIL.Image.open(photo) as opened:
        pic = opened.convert("RGB")
        scale = min(1.0, width / max(1, w))
        size = (max(1, round(pic.width * scale)), max(1, round(pic.height * scale)))
        small = pic.resize(size, PIL.Image.Resampling.LANCZOS) if scale < 1 else pic
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality)
    box = "\t".join(str(round(v * scale)) for v in (x, y, w, h))
    return out.getvalue(), f"{Path(name).stem}.jpg\t{box}\t{plate}\n"


def make(source: Path = DEFAULT_SOURCE, folder: Path | None = None) -> Path:
    """The scaled-down variant of ``source`` in ``folder`` (default DEFAULT_DIR/<source's name>), made where missing.

    Raises:
      SourceError: ``source`` holds no labeled photo, or a truth file is malformed or its photo missing.
    """
    folder = folder or DEFAULT_DIR / source.name
    truths = sorted(source.glob("*.txt"))
    if not truths:
        raise SourceError(f"{source} holds no NAME.txt truth file (openalpr's format); give a labeled folder")
    folder.mkdir(parents=True, exist_ok=True)
    for truth_file in truths:
        fields = truth(truth_file)
        photo, made = source / fields[0], folder / f"{Path(fields[0]).stem}.jpg"
        if not photo.is_file():
            raise SourceError(f"{truth_file} names {fields[0]}, which is not in {source}")
        if made.is_file() and (folder / truth_file.name).is_file():
            continue
        data, line = scale_down(photo, *fields)
        made.write_bytes(data)
        (folder / truth_file.name).write_text(line, encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaled_down", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE, metavar="DIR",
                        help=f"a labeled folder in openalpr's format (default {DEFAULT_SOURCE})")
    parser.add_argument("folder", nargs="?", type=Path, help=f"where to (default {DEFAULT_DIR}/<DIR's name>)")
    args = parser.parse_args(argv)
    try:
        folder = make(args.source, args.folder)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(list(folder.glob('*.txt')))} scaled-down photos in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
