"""The evaluation command, and the local recognizer measured with it on real photos.

The accuracy test runs the real models on the development set (real car
photos with their plates), on photos without a car fetched from package
registries (bench/negatives.py), and on the seed with Rekognition's decisions.
"""

import json
import shutil

import pytest

from bench import negatives
from carcelery.commands import evaluate
from carcelery.embedded.demo import SEED_IMAGES

DEV = SEED_IMAGES.parent / "dev" / "br"


def test_reference_is_read_from_the_seed_table():
    cases = evaluate.reference(SEED_IMAGES / "REFERENCE.md")
    assert {case.path.name: case.car for case in cases} == {
        f"{n}.jpg": n in (1, 2, 4, 5, 6, 7) for n in range(1, 11)}


def test_labeled_folder_in_openalprs_format(tmp_path):
    (tmp_path / "a.txt").write_text("a.jpg\t10\t20\t30\t10\tAB-12 34\n")
    [case] = evaluate.labeled(tmp_path)
    assert (case.path, case.car, case.plate) == (tmp_path / "a.jpg", True, "AB1234")


def test_what_it_got_wrong_is_named(tmp_path, capsys):
    cars, others = tmp_path / "cars", tmp_path / "others"
    cars.mkdir(), others.mkdir()
    shutil.copy(DEV / "AYO9034.jpg", cars)
    (cars / "AYO9034.txt").write_text("AYO9034.jpg\t0\t0\t1\t1\tZZZ9999\n")  # a plate it cannot read
    shutil.copy(SEED_IMAGES / "4.jpg", others)  # a car among the negatives
    assert evaluate.main(["--labeled", str(cars), "--negatives", str(others)]) == 0
    out = capsys.readouterr().out
    assert "car recall 1.000" in out and "false car rate 1.000" in out
    assert "wrong: AYO9034.jpg: plate ZZZ9999 not in its line 'AYO9034.jpg: " in out
    assert "plate in output.txt 0.000" in out
    assert "wrong: 4.jpg: false car (car confidence" in out


def test_a_plate_is_looked_for_in_the_text_not_in_the_name():
    case = evaluate.Case(DEV / "AYO9034.jpg", True, "AYO9034")
    outcome = evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": "AYO9034.jpg: DF-BRASILIA"})
    assert not outcome.plate_read("vehicles")
    assert evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": "AYO9034.jpg: AYO-9034"}).plate_read("vehicles")


def test_with_the_rekognition_backend(emulator, tmp_path, capsys):
    # The emulator's Rekognition gives canned answers, without a car.
    shutil.copy(DEV / "AYO9034.jpg", tmp_path)
    (tmp_path / "AYO9034.txt").write_text("AYO9034.jpg\t0\t0\t1\t1\tAYO9034\n")
    assert evaluate.main(["--backend", "rekognition", "--labeled", str(tmp_path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 1 and figures["car_recall"] == 0 and figures["plate_read"] == {"vehicles": 0}
    assert figures["wrong"] == [{"image": "AYO9034.jpg", "why": "missed car (car confidence 0.0)"}]


def test_an_empty_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--negatives", str(tmp_path)])
    assert "holds no image this command can use" in capsys.readouterr().err


# Not seconds: the models over 150 photos, and fetching the negatives (apt-get, dpkg-deb) when not cached.
@pytest.mark.integration
def test_the_local_recognizer_on_real_photos(capsys):
    folder = negatives.fetch()
    assert evaluate.main(["--labeled", str(DEV), "--negatives", str(folder),
                          "--reference", str(SEED_IMAGES / "REFERENCE.md"), "--json"]) == 0
    dev, negative, seed = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert dev["images"] == 114 and dev["car_recall"] >= 0.98, dev["wrong"]
    # 0.93-0.95 measured; OCR may differ by an image or two on another CPU.
    assert dev["plate_read"]["vehicles"] >= 0.92, dev["wrong"]
    assert negative["images"] >= 13 and negative["false_car_rate"] == 0, negative["wrong"]
    assert seed["car_recall"] == 1 and seed["false_car_rate"] == 0, seed["wrong"]
