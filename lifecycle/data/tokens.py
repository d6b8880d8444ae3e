"""Token counting for length filters and the histogram: whitespace words, or a real tokenizer.

    count = token_counter("whitespace")      # len(text.split())
    count = token_counter("tiny-arith")      # the built-in model's tokenizer (any artifact name or path)
    count = token_counter("path/to/tokenizer_dir")

A folder with `tokenizer.model` is read with sentencepiece and one with `tokenizer.json` with `tokenizers`,
both without loading transformers; anything else goes through `AutoTokenizer` (local files only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lifecycle.errors import UserError


def token_counter(spec: str) -> Callable[[str], int]:
    if spec in ("", "whitespace", "words"):
        return lambda text: len(text.split())
    path = Path(spec).expanduser()
    if not path.is_dir():
        from lifecycle.models import resolve

        try:
            path = resolve(spec, verify=False).path
        except UserError:
            path = None
    if path is not None and (path / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
        return lambda text: len(sp.encode(text))
    if path is not None and (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path or spec), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/ImportError for a bad spec
        raise UserError(f"tokenizer '{spec}' could not be loaded ({type(e).__name__}); give 'whitespace', "
                        "a built-in model name (tiny-arith) or a folder with tokenizer files") from None
    return lambda text: len(hf(text, add_special_tokens=False)["input_ids"])
