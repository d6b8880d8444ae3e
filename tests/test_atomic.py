"""lifecycle.atomic: the one temp-file-then-rename helper every writer uses."""

import json
import os
import stat

import pytest

from lifecycle.atomic import OWNER_ONLY, atomic_dir, atomic_file, write_json_atomic, write_text_atomic

pytestmark = pytest.mark.unit


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_text_and_bytes_land_whole_with_the_asked_mode(tmp_path):
    p = write_text_atomic(tmp_path / "sub" / "a.txt", "héllo\n")  # parent created
    assert p.read_bytes() == "héllo\n".encode() and _mode(p) == 0o644
    write_text_atomic(p, b"\x00\xff", mode=OWNER_ONLY)
    assert p.read_bytes() == b"\x00\xff" and _mode(p) == 0o600
    assert [q.name for q in p.parent.iterdir()] == ["a.txt"]


def test_json_is_indented_with_a_newline_and_str_for_the_rest(tmp_path):
    p = write_json_atomic(tmp_path / "m.json", {"path": tmp_path, "n": 1})
    text = p.read_text()
    assert text.endswith("}\n") and '\n  "n": 1' in text
    assert json.loads(text)["path"] == str(tmp_path)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write("half a row")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n" and sorted(q.name for q in tmp_path.iterdir()) == ["rows.jsonl"]
    with pytest.raises(TypeError):  # a complex key: json.dumps fails before a byte is written
        write_json_atomic(p, {1j: 1})
    assert p.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_swaps_a_whole_folder_or_nothing(tmp_path):
    dest = tmp_path / "release"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(dest) as tmp:
            (tmp / "new.txt").write_text("new")
            raise ValueError
    assert [q.name for q in dest.iterdir()] == ["old.txt"] and [q.name for q in tmp_path.iterdir()] == ["release"]
    with atomic_dir(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".release.tmp-")
        (tmp / "new.txt").write_text("new")
    assert [q.name for q in dest.iterdir()] == ["new.txt"] and _mode(dest) == 0o755
    assert [q.name for q in tmp_path.iterdir()] == ["release"]  # the set-aside old folder is gone
