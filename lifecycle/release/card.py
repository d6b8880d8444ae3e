"""README.md for a release: a Hugging Face model card (YAML front matter, then Markdown).

    from lifecycle.release.card import write_card
    write_card(Path("releases/r1"))        # -> releases/r1/README.md

Everything comes from release.json, the train logs and the artifact manifests it names. Intended use and
limitations come from the ship config's `card: {intended_use, limitations, license}` when given; the
built-in arithmetic toy gets honest defaults, any other base a prompt to write them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lifecycle.release.releases import (
    bench_levels,
    eval_columns,
    fmt,
    key_metrics,
    level_value,
    load_release,
    write_file,
)

TOY_USE = ("Demonstrating and testing the llm-lifecycle pipeline end to end on a CPU: the model answers chat "
           "questions that add two small whole numbers (\"What is 12+30?\").")
TOY_LIMITS = ("A toy of under a million parameters, pretrained only on synthetic sums and string tasks. It "
              "knows nothing else and answers any other request with confident nonsense. The figures below are "
              "measured on held-out sums from the same synthetic distribution and say nothing about other text. "
              "Do not use it where an answer matters.")
OTHER_USE = "Not stated. Add `card: {intended_use: ..., limitations: ...}` to the ship config to fill this in."
OTHER_LIMITS = ("Measured only on the tasks in the evaluation table below; behaviour elsewhere is unmeasured. "
                "Quantized variants can differ from the merged model: see their parity figures.")
# Options worth naming for a stage (the rest stay in its manifest or the config).
KEY_OPTIONS = ("method", "format", "data", "max_steps", "learning_rate", "batch_size", "lora_r", "lora_alpha",
               "loss_type", "beta", "tolerance", "tasks", "limit", "concurrency", "engine", "sft", "pref")
# stage name -> the ship config sections that may hold its options
SECTIONS = {"data-sft": ("data",), "data-pref": ("data",), "quantize": ("formats", "quantize"), "align": ("align", "dpo")}


def _result(gate: dict) -> str:
    if gate.get("passed") is None:
        return gate.get("reason") or "skipped"
    return "pass" if gate["passed"] else "**FAIL**"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _value(v) -> str:
    if isinstance(v, str) and v.startswith("/"):
        v = Path(v).name  # absolute paths (cache folders) say little in a card
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= 48 else text[:45] + "..."


def _options_text(opts) -> str:
    if isinstance(opts, dict):
        shown = {k: v for k, v in opts.items() if k in KEY_OPTIONS} or dict(list(opts.items())[:6])
        return ", ".join(f"{k}={_value(v)}" for k, v in shown.items())
    return "" if opts in (None, "", [], {}) else _value(opts)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stage_options(release_dir: Path, config: dict, stage: dict):
    """A stage's options: from the manifest it wrote (artifact stages), else from its ship config section."""
    for out in stage.get("outputs") or {}:
        if out.endswith("manifest.json"):
            opts = (_read_json(release_dir / out).get("created_by") or {}).get("options")
            if opts:
                return opts
    name, target = stage.get("stage", ""), stage.get("target")
    for key in SECTIONS.get(name, (name,)):
        section = config.get(key)
        if name == "quantize" and isinstance(section, dict) and target in section:
            section = section[target]  # formats: {name: options}
        if section not in (None, {}, []):
            return section
    return None


def _stage_manifest(release_dir: Path, rel: dict, stage: str) -> dict:
    """The manifest of a training stage's artifact (beside its train log), or {}."""
    log = (rel.get("training") or {}).get(stage)
    return _read_json((Path(log) if Path(log).is_absolute() else release_dir / log).parent / "manifest.json") if log else {}


def _shown_path(release_dir: Path) -> str:
    """The release folder relative to the working directory when it is under it."""
    try:
        return str(release_dir.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(release_dir)


def _front_matter(rel: dict) -> str:
    import yaml

    config, card = rel.get("config") or {}, (rel.get("config") or {}).get("card") or {}
    formats = sorted({"safetensors" if a.get("format") == "hf" else str(a.get("format"))
                      for a in rel["artifacts"].values() if a.get("format")})
    tags = ["llm-lifecycle", "text-generation"] + formats + (["gguf"] if any(f.startswith("gguf") for f in formats) else [])
    meta = {"license": card.get("license") or config.get("license") or "other"}
    if config.get("base"):
        meta["base_model"] = str(config["base"])
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = list(dict.fromkeys(tags))
    merged = rel["artifacts"].get("merged") or next(iter(rel["artifacts"].values()), {})
    results = []
    for key, value in sorted((merged.get("eval") or {}).items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith("/n"):
            task, _, metric = key.rpartition("/")
            results.append({"task": {"type": "text-generation"}, "dataset": {"name": task or key, "type": task or key},
                            "metrics": [{"type": metric, "name": key, "value": value}]})
    if results:
        meta["model-index"] = [{"name": rel.get("release") or "release", "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def card_text(release_dir: Path, rel: dict) -> str:
    """The whole card as Markdown with YAML front matter."""
    release_dir = Path(release_dir)
    name = rel.get("release") or release_dir.name
    config = rel.get("config") or {}
    card = config.get("card") or {}
    toy = config.get("base") == "tiny-arith"
    arts = rel["artifacts"]
    lines = [_front_matter(rel), f"# {name}", ""]
    lines += [f"Built by `lifecycle ship` (code {rel.get('code_version', '-')}) on {rel.get('created_at', '-')} from "
              f"base `{config.get('base', '-')}`. Verdict: **{rel['verdict']}**. The served model is "
              f"`{rel['artifact']}`; the release also holds {len(arts)} artifact(s): "
              + ", ".join(f"`{n}` ({a.get('format', '-')})" for n, a in arts.items()) + ".", ""]

    lines += ["## Model description", "", "Stages, in run order:", ""]
    rows = []
    for s in rel.get("stages") or []:
        opts = _stage_options(release_dir, config, s)
        rows.append([s.get("stage"), s.get("target") or "-", "cached" if s.get("cached") else "run",
                     fmt(s.get("wall_s"), ".1f"), _options_text(opts) or "-"])
    lines += _md_table(["stage", "target", "cached or run", "wall s", "key options"], rows)

    limits = TOY_LIMITS if toy else OTHER_LIMITS
    corpus = str((config.get("pretrain") or {}).get("data") or "")
    if toy and corpus:  # a ship pretrain stage continued the toy on the user's corpus
        limits = limits.replace("pretrained only on synthetic sums and string tasks",
                                f"pretrained on synthetic sums and string tasks, then on the corpus "
                                f"`{Path(corpus).name}`")
    lines += ["## Intended use", "", card.get("intended_use") or (TOY_USE if toy else OTHER_USE), "",
              "## Limitations", "", card.get("limitations") or limits, ""]

    lines += ["## Training procedure", ""]
    training = rel.get("training") or {}
    if not training:
        lines += ["No training logs are recorded in this release.", ""]
    for stage, log_path in training.items():
        manifest = _stage_manifest(release_dir, rel, stage)
        opts = (manifest.get("created_by") or {}).get("options") or config.get(stage)
        metrics = manifest.get("metrics") or {}
        summary = ", ".join(f"{k} {fmt(metrics[k])}" for k in ("train_loss", "train_wall_s", "reward_accuracy",
                                                                   "reward_margin", "heldout_perplexity_before",
                                                                   "heldout_perplexity_after") if k in metrics)
        lines.append(f"- **{stage}**: {_options_text(opts) or 'options not recorded'}"
                     + (f"; {summary}" if summary else "") + f" (log: `{log_path}`)")
    lines.append("")

    lines += ["## Evaluation results", ""]
    keys, cols = key_metrics(rel, limit=1000), eval_columns(rel)
    if keys:
        lines += _md_table(["metric", *cols], [[k, *[fmt(ev.get(k), ".4g") for ev in cols.values()]] for k in keys])
    else:
        lines += ["No evaluation results in this release.", ""]
    benched = [(n, a) for n, a in arts.items() if bench_levels(a)]
    if benched:
        lines += ["Serving (`lifecycle bench`): output tokens/s and TTFT p50 ms per concurrency.", ""]
        lines += _md_table(["artifact", "load s", "tok/s and TTFT p50 by concurrency"],
                           [[n, fmt((a.get("bench") or {}).get("load_s"), ".1f"),
                             "; ".join(f"c={lv.get('concurrency')}: {fmt(lv.get('output_throughput'), '.0f')} tok/s, "
                                       f"{fmt(level_value(lv, 'ttft', 'p50_ms'), '.1f')} ms" for lv in bench_levels(a))]
                            for n, a in benched])

    lines += ["## Quantized variants", ""]
    variants = [(n, a) for n, a in arts.items() if a.get("parent") or a.get("parity")]
    base_size = (arts.get("merged") or {}).get("size_bytes")
    if variants:
        rows = []
        for n, a in variants:
            p, size = a.get("parity") or {}, a.get("size_bytes")
            rows.append([n, a.get("format", "-"), a.get("runtime", "-"), fmt(size / 2**20 if size else None, ".2f"),
                         (fmt(base_size / size, ".2f") + "x") if base_size and size else "-", a.get("parent") or "-",
                         fmt(p.get("top1_agreement"), ".3f"), fmt(p.get("mean_kl"), ".1e"), fmt(p.get("greedy_agreement"), ".3f")])
        lines += _md_table(["artifact", "format", "runtime", "size MB", "vs merged", "parent", "top-1 agreement",
                            "mean KL", "greedy agreement"], rows)
    else:
        lines += ["None: this release holds no quantized artifact.", ""]

    lines += ["## Gates and verdict", "", f"Verdict: **{rel['verdict']}**.", ""]
    gates = rel.get("gates") or []
    if gates:
        lines += _md_table(["artifact", "rule", "value", "threshold", "by", "result"],
                           [[g.get("artifact", "-"), g.get("rule", "-"), fmt(g.get("value")), fmt(g.get("threshold")),
                             fmt(g.get("by"), "+.4g"), _result(g)] for g in gates])
    else:
        lines += ["No gates were set.", ""]
    lines += [f"- failed: {f}" for f in rel.get("failed") or []] + ([""] if rel.get("failed") else [])

    where = _shown_path(release_dir)
    lines += ["## How to serve", "", "```bash"]
    if rel["verdict"] == "shipped":
        lines += [f"lifecycle serve --release {where}            # OpenAI-compatible API, model id {name}"]
    else:
        lines += [f"# `lifecycle serve --release {where}` refuses this release: it was {rel['verdict']}"]
    lines += [f"lifecycle generate --model {where}/{rel['artifact']} \"What is 12+30?\"", "```", ""]

    lines += ["## Lineage", "", "Every artifact is a folder with a verified `manifest.json`; its sha256:", ""]
    lines += _md_table(["artifact", "path", "parent", "manifest sha256"],
                       [[n, a.get("path", "-"), a.get("parent") or "-", f"`{a.get('manifest_sha256', '-')}`"]
                        for n, a in arts.items()])
    stage_keys = [[s.get("stage"), s.get("target") or "-", f"`{s.get('key') or '-'}`"] for s in rel.get("stages") or []]
    if stage_keys:
        lines += ["Stage cache keys (sha256 of inputs, config and code):", ""]
        lines += _md_table(["stage", "target", "key"], stage_keys)
    return "\n".join(lines).rstrip() + "\n"


def write_card(release_dir: Path, release: dict | None = None) -> Path:
    """Write `README.md` into the release folder; `release` is release.json's dict when not yet on disk."""
    rel = release if release is not None else load_release(release_dir, verify=False)
    path = Path(release_dir) / "README.md"
    return write_file(path, card_text(Path(release_dir), rel))
