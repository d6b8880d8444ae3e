"""The CLI: instant help without heavy imports, model listing, one-line user errors."""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "ray", "trl", "peft", "datasets", "sklearn", "fastapi")


def _run(*args, timeout=120):
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.unit
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


@pytest.mark.unit
def test_stage_help_lists_config_fields():
    out = _run("sft", "--help")
    assert out.returncode == 0
    for name in ("lora_r", "assistant_only_loss", "target_modules"):
        assert name in out.stdout


@pytest.mark.unit
def test_models_json_lists_the_builtin_base():
    out = _run("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    base = next(r for r in rows if r["name"] == "tiny-arith")
    assert base["builtin"] is True and base["format"] == "hf" and base["parent"] is None
    assert set(base) >= {"name", "path", "format", "size", "parent", "builtin"}
    assert base["size"] > 100_000


@pytest.mark.unit
def test_user_errors_are_one_line():
    for args in (["sft", "--model", "/no/such/model"], ["merge"], ["sft", "--set", "method=qlora9"],
                 ["show", "nothing-here"]):
        out = _run(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.unit
def test_show_verifies_the_builtin():
    out = _run("show", "tiny-arith")
    assert out.returncode == 0, out.stderr
    assert "all sha256 verified" in out.stdout


def _main(monkeypatch, capsys, argv):
    from lifecycle import cli

    monkeypatch.setattr(sys, "argv", ["lifecycle", *argv])
    try:
        cli.main()
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.unit
def test_a_crash_exits_3_with_one_line_naming_its_log(monkeypatch, capsys, tmp_path):
    """1 means "refused by a gate", 2 "your input": an internal error is neither, and the traceback goes to a file."""
    import lifecycle.models

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    monkeypatch.setattr(lifecycle.models, "resolve", boom)
    code, err = _main(monkeypatch, capsys, ["show", "tiny-arith"])
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert err.startswith("internal error: RuntimeError: simulated bug (traceback: ")
    [log] = list((tmp_path / "logs").glob("crash-*.log"))
    assert str(log) in err and "Traceback" in log.read_text() and "simulated bug" in log.read_text()


@pytest.mark.unit
def test_a_missing_optional_module_names_the_extra_to_install(monkeypatch, capsys):
    import lifecycle.models

    def missing(*a, **k):
        raise ModuleNotFoundError("No module named 'llama_cpp'", name="llama_cpp")

    monkeypatch.setattr(lifecycle.models, "resolve", missing)
    code, err = _main(monkeypatch, capsys, ["show", "tiny-arith"])
    assert code == 2 and "pip install 'llm-lifecycle[quant]'" in err and "llama_cpp" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.unit
def test_install_advice_comes_only_from_install_hint():
    """A hand-written "pip install x" drifts from pyproject's extras; lifecycle.extras is the one source.
    Upgrades (pip install -U) are not install hints."""
    import re

    from lifecycle.release.codegraph import PACKAGES, ROOT

    pattern = re.compile(r"pip install (?!-U )")
    found = [f"{f.relative_to(ROOT)}:{n}" for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))
             if f.name != "extras.py" for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


@pytest.mark.unit
def test_a_hub_id_not_in_the_local_cache_is_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "show", "Qwen/Qwen2.5-0.5B-Instruct"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "not in the local Hugging Face cache" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_a_hub_id_resolves_from_the_local_cache(tmp_path, family_checkpoints):
    """`--model Org/Name` finds a snapshot already in the HF cache (laid out as huggingface_hub does)."""
    import shutil

    repo = tmp_path / "hub" / "models--Org--tiny-qwen"
    commit = "0" * 40
    shutil.copytree(family_checkpoints("qwen2"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "show", "Org/tiny-qwen"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout)
    assert manifest["format"] == "hf" and manifest["created_by"]["stage"] == "external"


@pytest.mark.parametrize("change,expect", [
    ({"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}, "ships its own model code"),
    ({"model_type": "no_such_arch"}, "model_type 'no_such_arch' is unknown to transformers")])
@pytest.mark.integration
def test_unsupported_checkpoints_are_refused_in_one_line(change, expect, family_checkpoints, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(family_checkpoints("qwen2"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, **change}))
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "generate", "hi", "--model", str(ckpt)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1
