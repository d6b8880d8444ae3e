"""The quantization layer's plumbing: registry, CLI, help without heavy imports, clear errors."""

import dataclasses
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from lifecycle.engine import registered_engines
from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from quantize import FORMATS, format_spec, missing_requirements

HEAVY = ("torch", "transformers", "llama_cpp", "onnxruntime", "onnxruntime_genai", "gptqmodel", "torchao",
         "bitsandbytes", "gguf", "conversion")


@pytest.mark.unit
def test_every_format_has_an_engine_and_options():
    engines = registered_engines()
    for name, spec in FORMATS.items():
        assert name in engines, name
        if missing_requirements(name):
            continue  # that format's own test file reports the skip
        mod = importlib.import_module(spec.module)
        assert hasattr(mod, "produce") and dataclasses.is_dataclass(mod.Options)
        module, cls = engines[name].split(":")
        assert hasattr(importlib.import_module(module), cls)


@pytest.mark.unit
def test_unknown_format_lists_known_ones():
    with pytest.raises(UserError, match="known: gguf-f16, .*int8"):
        format_spec("awq")


@pytest.mark.unit
def test_quantize_help_imports_no_heavy_library():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom lifecycle.cli import app\n"
            "r = CliRunner().invoke(app, ['quantize', '--help'])\nassert r.exit_code == 0, r.output\n"
            "assert 'pre_tokenizer' in r.output\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


@pytest.mark.unit
def test_cli_unknown_format_is_one_line():
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "quantize", "--format", "awq"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: unknown quantization format 'awq'")
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_refuses_a_non_hf_parent(sft_adapter, tmp_path):
    from quantize.driver import quantize

    if missing_requirements("gguf-q8_0"):
        pytest.skip(install_hint("llama_cpp"))
    with pytest.raises(UserError, match="lifecycle merge"):
        quantize(sft_adapter.path, "gguf-q8_0", tmp_path / "x")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "conversion")),
                    reason=install_hint("llama_cpp"))
@pytest.mark.integration
def test_cli_end_to_end_prints_parity_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "quantize", "--model", "tiny-arith", "--format",
                          "gguf-q4_0", "--output", str(tmp_path / "q4"), "--set", "eval_items=10",
                          "--set", "parity_prompts=4"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LIFECYCLE_NO_PROGRESS": "1", "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gguf-q4_0" in out.stdout and "top-1" in out.stdout
    from lifecycle.artifact import Artifact

    assert Artifact.load(tmp_path / "q4").metrics["eval_items"] == 10


@pytest.mark.unit
def test_builtin_shapes_fit_every_quantized_runtime(base_artifact):
    """The built-in base is shaped for the quantized runtimes: onnxruntime's CPU attention needs a head size
    that is a multiple of 16, and bitsandbytes' CPU NF4 (blocks of 64), GGUF Q8_0/Q4_0 (32) and ORT
    MatMulNBits (32) need Linear widths their blocks divide; every in/out width here is a multiple of 64."""
    import json

    cfg = json.loads((base_artifact.path / "config.json").read_text())
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    assert head % 16 == 0 and head * cfg["num_attention_heads"] == cfg["hidden_size"], cfg
    widths = {"hidden": cfg["hidden_size"], "intermediate": cfg["intermediate_size"],
              "kv": head * cfg["num_key_value_heads"], "vocab": cfg["vocab_size"]}
    assert all(w % 64 == 0 for w in widths.values()), widths


@pytest.mark.unit
def test_gguf_extra_buffers_off_where_amx_is_advertised(monkeypatch):
    """AMX advertised but not enabled kills the process in libggml-cpu; the setting keeps llama.cpp off it."""
    pytest.importorskip("llama_cpp")
    import llama_cpp.llama_cpp as low

    from quantize import gguf_format

    monkeypatch.setenv("LIFECYCLE_GGUF_EXTRA_BUFFERS", "0")
    assert gguf_format.extra_buffers_allowed() is False
    monkeypatch.setenv("LIFECYCLE_GGUF_EXTRA_BUFFERS", "1")
    assert gguf_format.extra_buffers_allowed() is True
    monkeypatch.delenv("LIFECYCLE_GGUF_EXTRA_BUFFERS")
    with open("/proc/cpuinfo") as f:
        advertised = " amx_tile" in f.read()
    assert gguf_format.extra_buffers_allowed() is (not advertised)

    original = low.llama_model_default_params
    with gguf_format._model_params(use_extra_bufts=False, vocab_only=True):
        params = low.llama_model_default_params()
        assert params.use_extra_bufts is False and params.vocab_only is True
    assert low.llama_model_default_params is original and original().use_extra_bufts is True
