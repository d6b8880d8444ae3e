"""Which `pip install 'llm-lifecycle[extra]'` brings a missing module, for one-line install hints.

    raise UserError(f"GGUF needs llama-cpp-python: {install_hint('llama_cpp')}")
    # GGUF needs llama-cpp-python: 'llama_cpp' is not installed; run: pip install torch==2.13.0 (the CPU
    # build) first, then pip install 'llm-lifecycle[quant]'
    install_command("serve")                     # "pip install 'llm-lifecycle[serve]'"

Every message in the project that tells a user to install something comes from here.

The CLI turns any ModuleNotFoundError that escapes a command into this one line (exit status 2).
"""

from __future__ import annotations

# top-level module -> the extra that installs it (see [project.optional-dependencies] in pyproject.toml)
EXTRA_OF = {
    **dict.fromkeys(("torch", "transformers", "peft", "trl", "accelerate", "sentencepiece", "safetensors"), "train"),
    **dict.fromkeys(("datasets", "datasketch", "trafilatura", "lxml_html_clean", "pyarrow", "py3langid",
                     "phonenumbers", "stdnum"), "data"),
    **dict.fromkeys(("sklearn", "scipy", "rouge_score", "sacrebleu"), "eval"),
    **dict.fromkeys(("torchao", "bitsandbytes", "llama_cpp", "conversion", "gguf", "onnxruntime_genai", "onnx",
                     "onnxruntime", "onnx_ir", "onnxscript", "gptqmodel", "optimum"), "quant"),
    **dict.fromkeys(("fastapi", "uvicorn", "pydantic", "ray", "openai", "prometheus_client", "aiohttp", "jsonschema",
                     "llguidance"),
                    "serve"),
    **dict.fromkeys(("locust", "psutil", "matplotlib"), "loadtest"),
}
TORCH_FIRST = "pip install torch==2.13.0 (the CPU build) first, then "


def install_command(extra: str) -> str:
    """The command that installs one extra (torch's CPU build first where the extra needs torch)."""
    command = f"pip install 'llm-lifecycle[{extra}]'"
    return TORCH_FIRST + command if extra in ("train", "quant") else command


def install_hint(module: str) -> str:
    """One line naming the missing module and the install command that brings it."""
    top = (module or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return f"the Python module '{top}' is not installed; reinstall with: pip install -e '.[all]'"
    return f"'{top}' is not installed; run: {install_command(extra)}"
