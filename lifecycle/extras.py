"""Which `pip install 'llm-lifecycle[extra]'` brings a missing module, for one-line install hints.

    raise UserError(install_hint("llama_cpp"))   # "llama_cpp is not installed; run: pip install 'llm-lifecycle[quant]'"

The CLI turns any ModuleNotFoundError that escapes a command into this one line (exit status 2).
"""

from __future__ import annotations

# top-level module -> the extra that installs it (see [project.optional-dependencies] in pyproject.toml)
EXTRA_OF = {
    **dict.fromkeys(("torch", "transformers", "peft", "trl", "accelerate", "sentencepiece", "safetensors"), "train"),
    **dict.fromkeys(("datasets", "datasketch", "trafilatura", "lxml_html_clean", "pyarrow", "py3langid"), "data"),
    **dict.fromkeys(("sklearn", "scipy", "rouge_score", "sacrebleu"), "eval"),
    **dict.fromkeys(("torchao", "bitsandbytes", "llama_cpp", "conversion", "gguf", "onnxruntime_genai", "onnx",
                     "onnxruntime", "onnx_ir", "onnxscript", "gptqmodel", "optimum"), "quant"),
    **dict.fromkeys(("fastapi", "uvicorn", "pydantic", "ray", "openai", "prometheus_client", "aiohttp", "jsonschema"),
                    "serve"),
    **dict.fromkeys(("locust", "psutil", "matplotlib"), "loadtest"),
}
TORCH_FIRST = "pip install torch==2.13.0 (the CPU build) first, then "


def install_hint(module: str) -> str:
    """One line naming the missing module and the install command that brings it."""
    top = (module or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return f"the Python module '{top}' is not installed; reinstall with: pip install -e '.[all]'"
    needs_torch = extra in ("train", "quant")
    command = f"pip install 'llm-lifecycle[{extra}]'"
    return f"'{top}' is not installed; run: {TORCH_FIRST + command if needs_torch else command}"
