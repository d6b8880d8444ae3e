"""Read release directories: load and verify, list, show, diff; the `lifecycle releases` commands.

    lifecycle releases list                          # every release under ./releases
    lifecycle releases show releases/r1
    lifecycle releases diff releases/r1 releases/r2  # config, metrics, bench, gates, verdict
    lifecycle releases diff releases/r1 releases/r2 --json
    lifecycle releases cache --prune --older-than 30   # drop stage-cache entries no ship used for 30 days

`load_release` is the one reader: it refuses a folder without release.json or with another schema, and
checks every stage output against the sha256 recorded in release.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lifecycle.errors import UserError

SCHEMA = "lifecycle.release/1"
REQUIRED = ("verdict", "artifact", "stages", "artifacts")
# Bench numbers compared by `diff` and shown by `show`, per concurrency level: (label, level key, percentile)
BENCH_HEADLINE = (("tok/s", "output_throughput", None), ("TTFT p50", "ttft", "p50_ms"), ("TTFT p95", "ttft", "p95_ms"),
                  ("E2E p50", "e2e", "p50_ms"), ("E2E p95", "e2e", "p95_ms"))
PREFERRED_METRICS = ("addition/exact_match", "addition/verbose_rate", "style/verbose_rate", "addition-raw/exact_match")


# ---- loading ---------------------------------------------------------------------------------------------
def release_dir(path: str | Path) -> Path:
    """The release folder for a folder or its release.json."""
    p = Path(path).expanduser()
    return p.parent if p.name == "release.json" and p.is_file() else p


def load_release(path: str | Path, verify: bool = True) -> dict:
    """release.json of a release folder; with `verify`, every stage output's sha256 is checked."""
    root = release_dir(path)
    meta = root / "release.json"
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; give a release folder written by `lifecycle ship`")
    if not meta.is_file():
        raise UserError(f"{root} is not a release (no release.json); make one with `lifecycle ship`")
    try:
        rel = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{meta} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rel, dict) or rel.get("schema") != SCHEMA:
        found = rel.get("schema") if isinstance(rel, dict) else type(rel).__name__
        raise UserError(f"{meta} has schema {found!r}, expected {SCHEMA!r}; rerun `lifecycle ship` with this version")
    missing = [k for k in REQUIRED if k not in rel]
    if missing:
        raise UserError(f"{meta} lacks {', '.join(missing)}; the release is incomplete")
    if not isinstance(rel["artifacts"], dict) or not isinstance(rel["stages"], list):
        raise UserError(f"{meta}: 'artifacts' must be a mapping and 'stages' a list (schema {SCHEMA})")
    if verify:
        verify_outputs(rel, root)
    return rel


def verify_outputs(rel: dict, root: Path) -> None:
    """Refuse the release if a stage output is missing or its sha256 differs from release.json."""
    from lifecycle.artifact import MANIFEST, sha256_file

    for stage in rel.get("stages") or []:
        for rel_path, digest in (stage.get("outputs") or {}).items():
            p = Path(rel_path) if Path(rel_path).is_absolute() else root / rel_path
            target = p / MANIFEST if p.is_dir() else p  # an artifact folder is recorded by its manifest
            where = f"release {root.name}: output '{rel_path}' of stage {stage.get('stage')}"
            if not target.is_file():
                raise UserError(f"{where} is missing")
            actual = sha256_file(target)
            if actual != digest:
                raise UserError(f"{where}: sha256 mismatch (release.json {str(digest)[:12]}…, file {actual[:12]}…); "
                                "the file was changed after the release was written")


def served_artifact(path: str | Path) -> dict:
    """What `lifecycle serve --release` serves: {name, path, artifact}; only a shipped, verified release."""
    from lifecycle.artifact import Artifact

    root = release_dir(path)
    rel = load_release(root)
    if rel["verdict"] != "shipped":
        failed = rel.get("failed") or []
        why = "; ".join(failed[:2]) + (f"; and {len(failed) - 2} more" if len(failed) > 2 else "") or "its gates failed"
        raise UserError(f"release {root} was {rel['verdict']}, not shipped ({why}); not serving it")
    art_dir = root / rel["artifact"]
    if not art_dir.is_dir():
        raise UserError(f"release {root} lacks its artifact {rel['artifact']}")
    art = Artifact.load(art_dir)  # every file against the manifest
    recorded = next((a.get("manifest_sha256") for a in rel["artifacts"].values()
                     if Path(a.get("path", "")) == Path(rel["artifact"])), None)
    if recorded and recorded != art.manifest_sha256:
        raise UserError(f"release {root}: the manifest of {rel['artifact']} differs from the one release.json "
                        "recorded; the artifact was replaced after the release was written")
    return {"name": rel.get("release") or root.name, "path": str(art_dir.resolve()), "artifact": rel["artifact"]}


# ---- small helpers shared by show, diff, report and card ---------------------------------------------------
def write_file(path: Path, data: str | bytes) -> Path:
    """Write atomically, readable by all like the rest of a release."""
    from lifecycle.atomic import write_text_atomic

    return write_text_atomic(path, data)



def fmt(v: Any, spec: str = ".4g") -> str:
    """A number for a table: '-' when absent."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def headline_metric(rel: dict) -> str | None:
    """The metric a release is judged by: the first gated one, else a preferred one, else the first eval key."""
    keys = {k for a in rel.get("artifacts", {}).values() for k in (a.get("eval") or {})}
    for g in rel.get("gates") or []:
        if g.get("metric") in keys:
            return g["metric"]
    for k in PREFERRED_METRICS:
        if k in keys:
            return k
    return min(keys) if keys else None


def key_metrics(rel: dict, limit: int = 4) -> list[str]:
    """Eval keys worth a column (item counts `task/n` left out): gated, preferred, then the rest, at most `limit`."""
    keys = {k for a in rel.get("artifacts", {}).values() for k in (a.get("eval") or {}) if not k.endswith("/n")}
    order = [g.get("metric") for g in rel.get("gates") or []] + list(PREFERRED_METRICS) + sorted(keys)
    out: list[str] = []
    for k in order:
        if k in keys and k not in out:
            out.append(k)
    return out[:limit]


def eval_columns(rel: dict) -> dict[str, dict]:
    """Eval metrics per column: the base model's when the release recorded them, then each artifact's."""
    base = (rel.get("base") or {}).get("eval") if isinstance(rel.get("base"), dict) else None
    cols = {"base": base} if isinstance(base, dict) and base else {}
    cols.update({n: a.get("eval") or {} for n, a in rel["artifacts"].items()})
    return cols


def bench_levels(art: dict) -> list[dict]:
    return list(((art.get("bench") or {}).get("levels")) or [])


def level_value(level: dict, key: str, pct: str | None) -> float | None:
    v = level.get(key)
    if pct:
        v = v.get(pct) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None


def flatten(d: Any, prefix: str = "") -> dict:
    """Nested mappings as dotted keys; lists and scalars are leaves."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


# ---- list / show -----------------------------------------------------------------------------------------
def list_releases(root: str | Path) -> list[dict]:
    """One row per release folder under `root` (files are not re-hashed here; `show` does that)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; releases are written by `lifecycle ship --output {root}/NAME`")
    rows = []
    for d in sorted(p for p in root.iterdir() if (p / "release.json").is_file()):
        try:
            rel = load_release(d, verify=False)
        except UserError as e:
            rows.append({"name": d.name, "path": str(d), "created_at": None, "verdict": "invalid",
                         "artifacts": [], "metric": None, "value": None, "error": str(e)})
            continue
        metric = headline_metric(rel)
        merged = rel["artifacts"].get("merged") or next(iter(rel["artifacts"].values()), {})
        rows.append({"name": rel.get("release") or d.name, "path": str(d), "created_at": rel.get("created_at"),
                     "verdict": rel["verdict"], "artifacts": list(rel["artifacts"]), "metric": metric,
                     "value": (merged.get("eval") or {}).get(metric)})
    return sorted(rows, key=lambda r: (r["created_at"] or "", r["name"]))


def _table(title: str, columns: list[str], rows: list[list[str]]):
    from rich.table import Table

    t = Table(*columns, title=title, title_justify="left", box=None, pad_edge=False)
    for r in rows:
        t.add_row(*r)
    return t


def _show_parts(path: str | Path) -> list:
    root = release_dir(path)
    rel = load_release(root)
    color = "green" if rel["verdict"] == "shipped" else "red"
    parts: list = [(f"[bold]{rel.get('release') or root.name}[/bold]  [{color}]{rel['verdict']}[/{color}]  "
                    f"created {rel.get('created_at', '-')}  code {rel.get('code_version', '-')}  "
                    f"wall {fmt(rel.get('wall_s'), '.1f')} s  serves {rel['artifact']}  (outputs verified)")]
    parts += [f"  [red]FAILED[/red] {line}" for line in rel.get("failed") or []]
    metrics = key_metrics(rel)
    rows = []
    for name, a in rel["artifacts"].items():
        ev, par = a.get("eval") or {}, a.get("parity") or {}
        lv = bench_levels(a)
        tok = " / ".join(f"{fmt(x.get('output_throughput'), '.0f')}@{x.get('concurrency')}" for x in lv) or "-"
        rows.append([name, str(a.get("format", "-")), fmt((a.get("size_bytes") or 0) / 2**20, ".2f"),
                     *[fmt(ev.get(m), ".3f") for m in metrics], fmt(par.get("top1_agreement"), ".3f"),
                     fmt(par.get("mean_kl"), ".1e"), tok])
    parts.append(_table("artifacts", ["artifact", "format", "MB", *metrics, "top-1", "KL", "tok/s@c"], rows))
    gates = [[str(g.get("artifact", "-")), str(g.get("rule")), fmt(g.get("value")), fmt(g.get("threshold")),
              fmt(g.get("by"), "+.4g"), ("[green]pass[/green]" if g["passed"] else "[red]FAIL[/red]") if g.get("passed") is not None
              else f"[dim]{g.get('reason') or 'skipped'}[/dim]"]
             for g in rel.get("gates") or []]
    if gates:
        parts.append(_table("gates", ["artifact", "rule", "value", "threshold", "by", "result"], gates))
    stages = [[str(s.get("stage")), str(s.get("target") or "-"), "cached" if s.get("cached") else "run",
               fmt(s.get("wall_s"), ".1f"), str(s.get("key") or "-")[:12]] for s in rel.get("stages") or []]
    parts.append(_table("stages", ["stage", "target", "cached", "wall s", "key"], stages))
    dep = rel.get("deploy")
    parts.append(f"deploy: {dep.get('engine')} {dep.get('url', '')}" if isinstance(dep, dict) else "deploy: none")
    return parts


def _render(parts: list) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=140, color_system=None, highlight=False)
    for p in parts:
        console.print(p)
    return buf.getvalue()


def show(path: str | Path) -> str:
    """A verified release as text: verdict, failed gates, artifact matrix, gates, stages, deploy."""
    return _render(_show_parts(path))


# ---- diff ------------------------------------------------------------------------------------------------
def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float))


def _delta(old: Any, new: Any) -> dict:
    num = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, new))
    return {"old": old, "new": new, "delta": round(new - old, 10) if num else None}


def diff_data(a: str | Path, b: str | Path) -> dict:
    """What changed from release `a` to release `b`, as plain data (JSON-ready)."""
    ra, rb = load_release(a), load_release(b)
    fa, fb = flatten(ra.get("config") or {}), flatten(rb.get("config") or {})
    config = {k: {"old": fa.get(k), "new": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    arts_a, arts_b = ra["artifacts"], rb["artifacts"]
    common = [n for n in arts_b if n in arts_a]
    evals, parity, bench = {}, {}, {}
    for n in common:
        for field, out in (("eval", evals), ("parity", parity)):
            ea, eb = arts_a[n].get(field) or {}, arts_b[n].get(field) or {}
            rows = {k: _delta(ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb))
                    if _scalar(ea.get(k)) and _scalar(eb.get(k))}
            if rows:
                out[n] = rows
        la = {lv.get("concurrency"): lv for lv in bench_levels(arts_a[n])}
        lb = {lv.get("concurrency"): lv for lv in bench_levels(arts_b[n])}
        levels = {}
        for c in sorted(set(la) | set(lb), key=lambda x: (x is None, x)):
            levels[str(c)] = {label: _delta(level_value(la.get(c, {}), key, pct), level_value(lb.get(c, {}), key, pct))
                              for label, key, pct in BENCH_HEADLINE}
        if levels:
            bench[n] = levels
    ga = {(g.get("artifact"), g.get("rule")): g for g in ra.get("gates") or []}
    gb = {(g.get("artifact"), g.get("rule")): g for g in rb.get("gates") or []}
    gates = []
    for key in list(ga) + [k for k in gb if k not in ga]:
        old, new = ga.get(key), gb.get(key)
        was, now = (old or {}).get("passed"), (new or {}).get("passed")
        if old is None or new is None or bool(was) != bool(now):
            gates.append({"artifact": key[0], "rule": key[1], "old": None if old is None else bool(was),
                          "new": None if new is None else bool(now), "old_value": (old or {}).get("value"),
                          "new_value": (new or {}).get("value")})
    return {
        "a": {"release": ra.get("release") or release_dir(a).name, "path": str(release_dir(a))},
        "b": {"release": rb.get("release") or release_dir(b).name, "path": str(release_dir(b))},
        "verdict": {"old": ra["verdict"], "new": rb["verdict"], "changed": ra["verdict"] != rb["verdict"]},
        "config": config,
        "artifacts": {"added": [n for n in arts_b if n not in arts_a], "removed": [n for n in arts_a if n not in arts_b],
                      "common": common},
        "eval": evals, "parity": parity, "bench": bench, "gates": gates,
    }


def _signed(d: dict, spec: str = "+.4g") -> str:
    return "-" if d["delta"] is None else format(d["delta"], spec)


def _diff_parts(d: dict) -> list:
    v = d["verdict"]
    parts: list = [f"[bold]{d['a']['release']}[/bold] -> [bold]{d['b']['release']}[/bold]  verdict "
                   + (f"{v['old']} -> {v['new']}" if v["changed"] else f"{v['new']} (unchanged)")]
    if d["artifacts"]["added"] or d["artifacts"]["removed"]:
        parts.append(f"artifacts added: {', '.join(d['artifacts']['added']) or '-'}; "
                     f"removed: {', '.join(d['artifacts']['removed']) or '-'}")
    if d["config"]:
        parts.append(_table("config", ["key", "old", "new"],
                            [[k, json.dumps(c["old"]), json.dumps(c["new"])] for k, c in d["config"].items()]))
    else:
        parts.append("config: unchanged")
    for field in ("eval", "parity"):
        pairs = [(n, k, m) for n, ms in d[field].items() for k, m in ms.items()]
        rows = [[n, k, fmt(m["old"]), fmt(m["new"]), _signed(m)] for n, k, m in pairs if m["old"] != m["new"]]
        same = f" ({len(pairs) - len(rows)} unchanged)" if len(pairs) > len(rows) else ""
        parts.append(_table(field + same, ["artifact", "metric", "old", "new", "delta"], rows) if rows
                     else f"{field}: {len(pairs)} values, none changed")
    pairs = [(n, c, label, m) for n, levels in d["bench"].items() for c, ms in levels.items() for label, m in ms.items()]
    rows = [[n, c, label, fmt(m["old"], ".1f"), fmt(m["new"], ".1f"), _signed(m, "+.1f")]
            for n, c, label, m in pairs if m["old"] != m["new"]]
    if pairs:
        same = f" ({len(pairs) - len(rows)} unchanged)" if len(pairs) > len(rows) else ""
        parts.append(_table("bench" + same, ["artifact", "c", "metric", "old", "new", "delta"], rows) if rows
                     else f"bench: {len(pairs)} values, none changed")
    word = {True: "pass", False: "FAIL", None: "absent"}
    gates = [[str(g["artifact"]), str(g["rule"]), f"{word[g['old']]} -> {word[g['new']]}",
              f"{fmt(g['old_value'])} -> {fmt(g['new_value'])}"] for g in d["gates"]]
    parts.append(_table("gates that changed", ["artifact", "rule", "result", "value"], gates) if gates
                 else "gates: no result changed")
    return parts


def diff(a: str | Path, b: str | Path) -> str:
    """`diff_data` as text tables."""
    return _render(_diff_parts(diff_data(a, b)))


# ---- CLI -------------------------------------------------------------------------------------------------
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def register(root: typer.Typer) -> None:
    """Add `releases list|show|diff|cache` to the root CLI."""
    app = typer.Typer(help="Look at release folders written by `lifecycle ship` (list, show, diff) and at its "
                           "stage cache (cache).",
                      no_args_is_help=True)

    def _print(parts: list) -> None:
        from rich.console import Console

        console = Console(highlight=False)
        for p in parts:
            console.print(p)

    @app.command("list")
    def list_cmd(
        root_dir: Annotated[Path, typer.Argument(metavar="ROOT", help="folder holding release folders")] = Path("releases"),
        as_json: JsonOpt = False,
    ) -> None:
        """List releases: name, created, verdict, artifacts, headline metric of the merged model."""
        rows = list_releases(root_dir)
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        verdict = {"shipped": "[green]shipped[/green]", "refused": "[red]refused[/red]"}
        _print([_table("", ["NAME", "CREATED", "VERDICT", "ARTIFACTS", "METRIC (merged)", "PATH"],
                       [[r["name"], r["created_at"] or "-", verdict.get(r["verdict"], r["verdict"]),
                         ", ".join(r["artifacts"]), f"{r['metric']} {fmt(r['value'], '.3f')}" if r["metric"] else "-",
                         r["path"]] for r in rows])] if rows else [f"(no releases in {root_dir})"])

    @app.command("show")
    def show_cmd(
        path: Annotated[Path, typer.Argument(metavar="DIR", help="release folder")],
        as_json: JsonOpt = False,
    ) -> None:
        """Verify a release's outputs and print its verdict, artifacts, gates and stages."""
        if as_json:
            print(json.dumps(load_release(path), indent=2))
            return
        _print(_show_parts(path))

    @app.command("diff")
    def diff_cmd(
        a: Annotated[Path, typer.Argument(help="older release folder")],
        b: Annotated[Path, typer.Argument(help="newer release folder")],
        as_json: JsonOpt = False,
    ) -> None:
        """What changed between two releases: config, eval and bench per artifact, gates, verdict."""
        data = diff_data(a, b)
        if as_json:
            print(json.dumps(data, indent=2))
            return
        _print(_diff_parts(data))

    @app.command("cache")
    def cache_cmd(
        prune: Annotated[bool, typer.Option("--prune", help="remove entries unused for --older-than days")] = False,
        older_than: Annotated[float, typer.Option("--older-than", min=0, metavar="DAYS",
                                                  help="with --prune: days since a ship last used an entry "
                                                       "(0 removes everything)")] = 14.0,
        cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="the stage cache "
                                                          "(default $LIFECYCLE_HOME/cache/ship)")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Show the stage cache of `lifecycle ship`, or prune it. Releases keep their files (hard links)."""
        from lifecycle.release.cache import StageCache, cache_root

        cache = StageCache(cache_dir or cache_root())
        if prune:
            with cache:  # refuses in one line while a ship holds the lock
                rows = cache.prune(older_than)
        else:
            rows = cache.entries()
        if as_json:
            print(json.dumps({"cache": str(cache.root), "pruned": prune, "entries": rows}, indent=2))
            return
        mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
        title = f"{'pruned from' if prune else 'stage cache'} {cache.root}"
        table = _table(title, ["KEY", "HOLDS", "UNUSED (days)", "SIZE", "FREED BY PRUNE"],
                       [[r["key"], ", ".join(r["holds"]), f"{r['age_days']:.1f}", mib(r["bytes"]),
                         mib(r["bytes_freed"])] for r in rows])
        total = (f"{len(rows)} entries, {mib(sum(r['bytes'] for r in rows))}, "
                 f"{mib(sum(r['bytes_freed'] for r in rows))} {'freed' if prune else 'not linked by a release'}")
        _print([table, total] if rows else [f"(nothing {'to prune' if prune else 'cached'} in {cache.root})"])

    root.add_typer(app, name="releases")
