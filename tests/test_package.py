"""The package's shape: parts that import each other one way, configuration that imports no service."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "carcelery"
# What a `pip install .` is made of: the package, Celery's configuration beside it, the metadata.
DISTRIBUTION = ("carcelery", "celeryconfig.py", "pyproject.toml", "requirements.txt", "README.md")


def _module_imports() -> dict[str, set[str]]:
    """Each carcelery module's carcelery imports, module-level and inside functions alike."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = _module_imports()
    assert len(graph) > 30  # the walk found the package

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, f"import cycles: {cycles}"


# (lower part, upper part, why): the lower never imports the upper, at the top or inside a function.
BELOW = [
    ("carcelery.app", "carcelery", "the app is the ground every part stands on; a step adds itself to it"),
    ("carcelery.backend", "carcelery.pipeline",
     "the result backend counts parts and sends the callback; what a callback not sent means is told to the "
     "chord's owner (backend.callback_not_sent)"),
    ("carcelery.aws", "carcelery.pipeline", "provision makes the tables from their key schemas (aws.tables)"),
    ("carcelery.recognizers", "carcelery.embedded", "a recognizer's models are its own (recognizers.weights)"),
]


def test_no_lower_part_imports_an_upper_one():
    def within(name: str, part: str) -> bool:
        return name == part or name.startswith(part + ".")

    graph = _module_imports()
    upward = sorted(f"{name} -> {imported} ({why})" for name, imports in graph.items() for imported in imports
                    for lower, upper, why in BELOW if within(name, lower) and within(imported, upper))
    assert not upward, "imports that run back up: " + "; ".join(upward)


@pytest.mark.integration  # a python process of its own
def test_the_app_alone_imports_no_other_part_and_a_workers_start_adds_the_s3_consumer_step():
    """The loader's init_worker, what a worker and the beat do first, imports celeryconfig's ``imports``:
    the consumer step of S3's notifications adds itself, and the beat's backfill interval is connected."""
    code = ("import sys; from carcelery import app; from celery.signals import beat_init; "
            "print(sorted(m for m in sys.modules if m.startswith('carcelery.'))); app.loader.init_worker(); "
            "print([s.__name__ for s in app.steps['consumer']], [r[1]().__name__ for r in beat_init.receivers])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['carcelery.app']", "['S3Events'] ['backfill_interval']"]


@pytest.mark.integration  # a pytest (or python) process of its own
def test_the_configuration_imports_no_aws_client():
    """celeryconfig and settings read the environment; boto3 comes with the first client, not with them."""
    code = "import sys, celeryconfig; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


@pytest.mark.integration  # a celery process of its own
def test_celery_finds_the_app_from_any_folder_once_installed(tmp_path):
    """scripts/setup installs the package: `celery -A carcelery` needs no checkout as its folder."""
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "carcelery", "report"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "transport:carcelery.transport:Transport" in done.stdout
    # The checkout's celeryconfig.py, the one a user edits, is the one Celery read.
    assert "task_default_queue: 'text'" in done.stdout
    where = subprocess.run([sys.executable, "-c", "import celeryconfig; print(celeryconfig.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == ROOT / "celeryconfig.py"


@pytest.mark.integration  # pip and celery processes of their own
def test_pip_install_puts_celeryconfig_beside_the_package(tmp_path):
    """A plain (not editable) `pip install .`: the app finds its configuration, installed with it, from any folder."""
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n not in DISTRIBUTION)])
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   cwd=elsewhere, capture_output=True, text=True, timeout=300, check=True)
    assert (target / "celeryconfig.py").is_file() and (target / "carcelery" / "app.py").is_file()
    # The installed copy ahead of the checkout's editable install; -P: not the current folder either.
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-P", "-c", "import celeryconfig, carcelery; "
                            "print(celeryconfig.__file__); print(carcelery.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert [Path(w).parent for w in where] == [target, target / "carcelery"]
    done = subprocess.run([sys.executable, "-P", "-m", "celery", "-A", "carcelery", "report"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "task_default_queue: 'text'" in done.stdout and "carcelery.tasks.detect_car" in done.stdout
