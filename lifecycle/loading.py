"""Hugging Face model and tokenizer loading, shared by the engines, the training stages and quantize.

    model, tok = load_causal_lm(resolve("runs/sft"))          # an adapter is merged into its base in memory
    ids = eos_token_ids(model, tok)                          # every id that ends a turn (generation_config too)

Nothing here assumes the built-in model: the dtype comes from the checkpoint (`dtype="auto"` keeps bf16 as
bf16), a tokenizer may lack a BOS or a pad token, and EOS ids are the union of the tokenizer's and the
generation config's. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def setup_torch(threads: int, seed: int) -> None:
    """Pin torch's thread count (the default oversubscribes 2 shared cores badly) and seed everything."""
    import torch
    from transformers import set_seed

    if threads > 0:
        torch.set_num_threads(threads)
    set_seed(seed)
    quiet_libraries()


def quiet_libraries() -> None:
    """Silence library progress bars and deprecation chatter; our own progress bar reports the work."""
    import importlib.util
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if importlib.util.find_spec("datasets"):
        import datasets

        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(trl|peft)\..*")
    if importlib.util.find_spec("logbar"):
        # gptqmodel (which peft imports during any LoRA run) prints a banner and a GIL notice through its
        # LogBar logger; LogBar replaces plain logging levels, so set it on LogBar's shared instance.
        import logging

        from logbar import LogBar

        LogBar.shared().setLevel(logging.ERROR)


def checkpoint_dtype(path: Path) -> str:
    """The dtype a checkpoint's config.json declares (`dtype`, or the older `torch_dtype`); float32 if none."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    found = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return found if found in DTYPES[1:] else "float32"


def torch_dtype(spec: str, path: Path):
    """`auto` keeps the checkpoint's own dtype; otherwise the named one."""
    import torch

    if spec not in DTYPES:
        raise UserError(f"dtype '{spec}' is unknown; use one of {', '.join(DTYPES)}")
    return getattr(torch, checkpoint_dtype(path) if spec == "auto" else spec)


def check_loadable(path: Path, trust_remote_code: bool = False) -> None:
    """Refuse, in one line naming the property and the fix, a checkpoint transformers cannot load as is:
    custom model code (`auto_map`) without trust_remote_code, or a model type this transformers lacks."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return
    if cfg.get("auto_map") and not trust_remote_code:
        raise UserError(f"{path} ships its own model code (config.json auto_map, model_type "
                        f"'{cfg.get('model_type')}'); lifecycle does not run a checkpoint's code by default: if you "
                        "trust its source, pass --set trust_remote_code=true")
    from transformers import CONFIG_MAPPING

    kind = cfg.get("model_type")
    if kind and kind not in CONFIG_MAPPING and not cfg.get("auto_map"):
        import transformers

        raise UserError(f"{path}: model_type '{kind}' is unknown to transformers {transformers.__version__}; "
                        "upgrade transformers (pip install -U transformers) or convert the checkpoint")


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_loadable(path, trust_remote_code)
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def load_causal_lm(art: Artifact, trust_remote_code: bool = False, dtype: str = "auto"):
    """Return (model, tokenizer) for an `hf` checkpoint or an `adapter` artifact (base merged in memory).

    Adapters stack: an adapter's base may itself be an adapter; each level is merged before the next.
    """
    from transformers import AutoModelForCausalLM

    if art.format == "hf":
        tok = load_tokenizer(art.path, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(art.path), dtype=torch_dtype(dtype, art.path),
                                                     trust_remote_code=trust_remote_code)
        return model, tok
    if art.format == "adapter":
        model, tok = load_causal_lm(adapter_base(art), trust_remote_code, dtype)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(art.path)).merge_and_unload()
        return model, tok
    raise UserError(f"{art.path} has format '{art.format}'; this needs an 'hf' or 'adapter' artifact")


def adapter_base(art: Artifact) -> Artifact:
    """The artifact an adapter was trained on, verified (its path and manifest hash are in `base`)."""
    base = art.manifest.get("base")
    if not base:
        raise UserError(f"adapter {art.path} records no base model in its manifest")
    recorded = Path(base["path"])
    # A release directory may have moved since training: also look beside the adapter and by name.
    for candidate in (recorded, art.path.parent / recorded.name, Path(__file__).parent / "builtin" / recorded.name):
        if (candidate / "manifest.json").is_file() or (candidate / "config.json").is_file():
            parent = Artifact.load(candidate, verify=False)
            if parent.manifest_sha256 == base["sha256"]:
                parent.verify()
                return parent
    raise UserError(f"adapter {art.path}: its base {recorded} is missing or changed since the adapter was trained "
                    f"(expected manifest sha256 {base['sha256'][:12]}…)")


def base_ref(art: Artifact) -> dict:
    """How an adapter names its base: path plus manifest sha256, checked again when the adapter loads."""
    from lifecycle.artifact import parent_ref

    return parent_ref(art)


def eos_token_ids(model, tok) -> list[int]:
    """Every id that ends generation: the tokenizer's EOS plus all of generation_config's `eos_token_id`."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        found = getattr(source, "eos_token_id", None)
        ids.update(found if isinstance(found, (list, tuple)) else [found] if found is not None else [])
    return sorted(i for i in ids if i is not None)


def pad_token_id(tok, eos_ids: list[int]) -> int:
    """The id to pad batches with. Padded positions are masked, so any id works when a model has none
    (Llama-3, Mistral): use the first EOS id. The tokenizer itself is left unchanged."""
    if tok.pad_token_id is not None:
        return tok.pad_token_id
    return eos_ids[0] if eos_ids else 0


def save_tokenizer(tok, dest: Path) -> None:
    """Save a tokenizer with its SentencePiece model: transformers 5 writes only tokenizer.json, but the
    llama.cpp converter and onnxruntime-genai read `tokenizer.model` when a model has one."""
    import shutil

    tok.save_pretrained(str(dest))
    source = getattr(tok, "vocab_file", None)
    if source and Path(source).is_file() and not (Path(dest) / "tokenizer.model").exists():
        shutil.copyfile(source, Path(dest) / "tokenizer.model")
