"""What the worst image each stage can be given costs a worker process: peak RSS, by stage and input.

    python -m bench.memory [--code DIR] [--quick] [--json FILE]

Starts the emulator, puts the inputs in a bucket, and for each stage and
input runs one fresh process that does what the stage does with it: read the
object (``images.read``), then decode it, as detection and text recognition
do (long side 2000) or as the report's picture does (480). Each prints its
peak RSS (the kernel's VmHWM) before and after, the CPU time and the outcome.

The inputs are the worst of each kind: an object of 400 MB under an image's
name; one just at CARCELERY_MAX_IMAGE_BYTES; a PNG of 0.3 MB that decodes to
7999x7999 RGBA; and the largest PNGs whose decode fits the decode limit
(imaging.MAX_DECODE_BYTES): RGB, transparent (RGBA) and grey (L).

``--code DIR`` imports carcelery from another checkout (DIR), to measure the
same inputs against other code; ``--quick`` measures two inputs, smaller.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.pipeline import free_port

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
LIMIT = 50 * MiB  # CARCELERY_MAX_IMAGE_BYTES' default
SIDES = {"detect, text": 2000, "report picture": 480}

# Run in a fresh process, carcelery imported from the code measured (its cwd).
CHILD = r"""
import json, re, sys, time
from carcelery import aws
from carcelery.pipeline import images
from carcelery.recognizers import Image, imaging

aws.client("s3")  # made before the first task, as a worker process does

def hwm():
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

bucket, key, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
before, cpu = hwm(), time.process_time()
try:
    pic = imaging.decode(Image(key, lambda: images.read(bucket, key)), side=side)
    outcome = f"decoded to {pic.width}x{pic.height}"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
print(json.dumps({"before_mb": before, "peak_mb": hwm(), "cpu_s": time.process_time() - cpu, "outcome": outcome}))
"""


def png(width: int, height: int, color_type: int) -> bytes:
    """A valid PNG of one colour, 8 bits per sample (colour type 6: RGBA, 2: RGB, 0: grey), made row by row."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    samples = {0: 1, 2: 3, 6: 4}[color_type]
    packer, row = zlib.compressobj(9), b"\0" + b"\x80" * (width * samples)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def inputs(quick: bool) -> dict[str, bytes]:
    """The inputs by description: the object's bytes."""
    over = LIMIT + 2 if quick else 400_000_000
    made = {f"object of {over / 1e6:,.0f} MB (0.jpg)": b"\xff\xd8" + bytes(over - 2),
            "PNG 0.3 MB, 7999x7999 RGBA (64 Mpx)": png(7999, 7999, 6)}
    if not quick:
        made.update({
            "object at the limit, 50 MiB": b"\xff\xd8" + bytes(LIMIT - 2),
            # The largest whose decode fits 256 MiB: 8 bytes a pixel (RGB), 20 (transparent), 5 (grey).
            "PNG 5792x5792 RGB (33.5 Mpx)": png(5792, 5792, 2),
            "PNG 3663x3663 RGBA (13.4 Mpx)": png(3663, 3663, 6),
            "PNG 7327x7327 grey (53.7 Mpx)": png(7327, 7327, 0),
        })
    return made


def measure(code: Path, env: dict[str, str], bucket: str, key: str, side: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, bucket, key, str(side)], check=False, cwd=code,
                          env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose carcelery is measured")
    parser.add_argument("--quick", action="store_true", help="two inputs, the object just over the limit")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    # Before carcelery is imported: it reads its settings once, at import.
    os.environ.update({"CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_HOST": "127.0.0.1",
                       "CARCELERY_EMULATOR_PORT": str(free_port())})
    os.environ.pop("CARCELERY_MAX_IMAGE_BYTES", None)
    from carcelery import aws
    from carcelery.aws import provision
    from carcelery.embedded.demo import Stack

    workdir = Path(tempfile.mkdtemp(prefix="carcelery-bench-"))
    cases = []
    with Stack(workdir) as stack:
        stack.start_emulator()
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        provision.bucket(bucket)
        for n, (name, data) in enumerate(inputs(args.quick).items()):
            key = f"{n}.png" if "PNG" in name else f"{n}.jpg"
            aws.client("s3").upload_fileobj(io.BytesIO(data), bucket, key)
            for stage, side in SIDES.items():
                got = measure(args.code.resolve(), stack.env, bucket, key, side)
                got.update(stage=stage, input=name, object_bytes=len(data),
                           added_mb=got["peak_mb"] - got["before_mb"])
                cases.append(got)
                print(f"{stage:15} {name:38} peak {got['peak_mb']:6.0f} MB (+{got['added_mb']:5.0f}), "
                      f"CPU {got['cpu_s']:5.2f} s: {got['outcome']}", flush=True)
    figures = {"code": str(args.code.resolve()), "max_image_bytes": LIMIT, "cases": cases}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
