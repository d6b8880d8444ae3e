"""The CLI: instant help without heavy imports, model listing, one-line user errors."""

import json
import os
import subprocess
import sys

HEAVY = ("torch", "transformers", "ray", "trl", "peft", "datasets", "sklearn", "fastapi")


def _run(*args, timeout=120):
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lifecycle.cli import app\n"
        "names = [c.name or c.callback.__name__ for c in app.registered_commands]\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for name in names:\n"
        "    assert CliRunner().invoke(app, [name, '--help']).exit_code == 0, name\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_stage_help_lists_config_fields():
    out = _run("sft", "--help")
    assert out.returncode == 0
    for name in ("lora_r", "assistant_only_loss", "target_modules"):
        assert name in out.stdout


def test_models_json_lists_the_builtin_base():
    out = _run("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    base = next(r for r in rows if r["name"] == "tiny-arith")
    assert base["builtin"] is True and base["format"] == "hf" and base["parent"] is None
    assert set(base) >= {"name", "path", "format", "size", "parent", "builtin"}
    assert base["size"] > 100_000


def test_user_errors_are_one_line():
    for args in (["sft", "--model", "/no/such/model"], ["merge"], ["sft", "--set", "method=qlora9"],
                 ["show", "nothing-here"]):
        out = _run(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_show_verifies_the_builtin():
    out = _run("show", "tiny-arith")
    assert out.returncode == 0, out.stderr
    assert "all sha256 verified" in out.stdout
