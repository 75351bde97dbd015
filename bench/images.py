"""N distinct benchmark images made from the seed images: crops, flips, scales, recompression.

Deterministic: image i is made from seed image i % 10 with a random generator seeded by i, so
every run of the benchmark sees the same images.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import PIL.Image
import PIL.ImageOps

from carcelery.recognizers.imaging import on_white


def variants(seed_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """``n`` (name, JPEG bytes) pairs; the first 10 are the seed images themselves, recompressed."""
    seeds = sorted(seed_dir.glob("*.jpg"), key=lambda p: int(p.stem))
    originals = [on_white(PIL.Image.open(p)) for p in seeds]
    made = []
    for i in range(n):
        rng = random.Random(i)
        pic = originals[i % len(originals)]
        if i >= len(originals):
            w, h = pic.size
            keep = rng.uniform(0.8, 1.0)
            left, top = rng.uniform(0, 1 - keep) * w, rng.uniform(0, 1 - keep) * h
            pic = pic.crop((int(left), int(top), int(left + keep * w), int(top + keep * h)))
            if rng.random() < 0.5:
                pic = PIL.ImageOps.mirror(pic)
            scale = rng.uniform(0.6, 1.2)
            pic = pic.resize((max(32, int(pic.width * scale)), max(32, int(pic.height * scale))))
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=rng.randint(70, 95))
        made.append((f"{i + 1}-from-{seeds[i % len(seeds)].stem}.jpg", buf.getvalue()))
    return made
