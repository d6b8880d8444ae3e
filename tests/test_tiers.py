"""The tier rule in conftest.py: a test with no tier marker, or two, stops collection with its name."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _collect(tmp_path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # the registered markers
    (tmp_path / "tests" / "test_x.py").write_text("import pytest\n\n" + body)
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "unit"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_every_test_needs_exactly_one_tier(tmp_path):
    out = _collect(tmp_path, "@pytest.mark.unit\ndef test_ok(): pass\n\n"
                             "def test_bare(): pass\n\n"
                             "@pytest.mark.unit\n@pytest.mark.slow\ndef test_two(): pass\n\n"
                             "@pytest.mark.integration\ndef test_other_tier(): pass\n")
    named = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("  tests/")]
    assert out.returncode == 4 and "exactly one tier marker" in out.stderr, out.stdout + out.stderr
    assert named == ["tests/test_x.py::test_bare: no tier", "tests/test_x.py::test_two: slow, unit"]


def test_a_module_mark_counts_for_every_test(tmp_path):
    out = _collect(tmp_path, "pytestmark = pytest.mark.unit\n\ndef test_a(): pass\n\ndef test_b(): pass\n")
    assert out.returncode == 0 and "2 tests collected" in out.stdout, out.stdout + out.stderr
