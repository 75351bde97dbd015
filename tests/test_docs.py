"""README and docs/ against the code: the settings' table, links, paths and commands (unit, fast)."""

import importlib.util
import re
from pathlib import Path

import pytest

from carcelery import settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Read only to refuse it with a message naming its replacement (settings.py).
RETIRED = {"CARCELERY_RATE_LIMIT"}
READ = re.compile(r"""(?:env(?:iron)?(?:\.get\(|\[)|_(?:number|ranged|choice|switch|s3_uri|plate_formats)\(env,\s*)["'](CARCELERY_\w+)["']""")


def _doc_ids():
    return [str(path.relative_to(ROOT)) for path in DOCS]


def _table_names() -> set[str]:
    return {name for name, _, _ in settings.table()}


def test_configuration_doc_holds_the_table_settings_py_prints():
    text = CONFIGURATION.read_text()
    found = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", text, re.S)
    assert found, f"{CONFIGURATION} has no <!-- settings:begin --> ... <!-- settings:end --> markers"
    assert found.group(1) == settings.markdown(), (
        "docs/configuration.md's table differs from carcelery/settings.py's: paste the output of "
        "`python -m carcelery.settings` between its markers")


def test_every_setting_read_is_in_the_table_and_every_row_is_read():
    read = set()
    for path in (ROOT / "carcelery").rglob("*.py"):
        read |= set(READ.findall(path.read_text()))
    read -= RETIRED
    assert read, "found no CARCELERY_* read in carcelery/: the pattern above no longer matches the code"
    table = _table_names()
    assert not read - table, f"read in carcelery/ but not in settings.py's table: {sorted(read - table)}"
    assert not table - read, f"in settings.py's table but read nowhere in carcelery/: {sorted(table - read)}"


def test_every_setting_the_docs_name_exists():
    known = _table_names()
    for path in [*DOCS, ROOT / "deploy" / "carcelery.env"]:
        named = set(re.findall(r"\bCARCELERY_[A-Z_]*[A-Z]\b", path.read_text())) - RETIRED
        assert not named - known, f"{path.relative_to(ROOT)} names settings that do not exist: {sorted(named - known)}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_relative_links_lead_somewhere(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:, ...
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(path), f"{doc.name}: link to {target}: no such heading in {path.name}"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_paths_and_modules_named_exist(doc):
    text = doc.read_text()
    for path in re.findall(r"(?<![\w/.~-])((?:carcelery|bench|deploy|tests|scripts|docs)/[\w./-]*\w/?)", text):
        assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"
    for module in set(re.findall(r"python -m ((?:carcelery|bench)(?:\.[a-z_][a-z0-9_]*)*)", text)):
        assert importlib.util.find_spec(module), f"{doc.name} runs python -m {module}, which does not exist"


def test_readme_quick_start_is_the_demo_then_the_tests_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\w*\n(.*?)```", section, re.S)
    assert blocks and blocks[0].splitlines() == ["scripts/demo", ".venv/bin/python -m pytest"]
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
