"""report.html: one self-contained page for a release: verdict, artifact matrix, gates, stages, plots.

    from lifecycle.release.report import write_report, plot_pngs
    write_report(Path("releases/r1"))                  # -> releases/r1/report.html
    plot_pngs(Path("releases/r1"), Path("docs/img"))   # the same plots as PNG files

Plots are drawn with matplotlib (Agg) and inlined as base64 PNGs; the page has its CSS inline and loads
nothing from anywhere. What a release lacks (bench, train logs, deploy) is shown as absent.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from lifecycle.release.releases import (
    bench_levels,
    eval_columns,
    flatten,
    fmt,
    headline_metric,
    key_metrics,
    level_value,
    load_release,
    write_file,
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1500px;margin:20px auto;padding:0 18px}
h1{margin:0 0 6px}h2{margin:28px 0 6px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.verdict{display:inline-block;font-size:46px;font-weight:800;letter-spacing:3px;color:#fff;padding:10px 28px;border-radius:10px;margin:8px 0}
.shipped{background:#1a7f37}.refused{background:#cf222e}.other{background:#6e7781}
.meta,.muted{color:#59636e}.failed{color:#cf222e;font-family:ui-monospace,monospace;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f4}td.t,th.t{text-align:left}tbody tr:nth-child(even){background:#f6f8fa}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:700}td.bad{background:#ffebe9}
.plots img{max-width:100%;border:1px solid #d0d7de;border-radius:6px;margin:6px 0}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


# ---- data ------------------------------------------------------------------------------------------------
def train_logs(release_dir: Path, rel: dict) -> dict[str, dict]:
    """{stage: train_log.json} for the logs the release lists and that can be read."""
    out = {}
    for stage, p in (rel.get("training") or {}).items():
        if not p:
            continue
        path = Path(p) if Path(p).is_absolute() else Path(release_dir) / p
        try:
            log = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(log, dict) and isinstance(log.get("history"), list):
            out[stage] = log
    return out


def _series(history: list, key: str) -> tuple[list, list]:
    pts = [(h["step"], h[key]) for h in history if isinstance(h, dict)
           and isinstance(h.get("step"), (int, float)) and isinstance(h.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _margin_key(history: list) -> str | None:
    for h in history:
        for k in h if isinstance(h, dict) else ():
            if k.endswith(("margins", "margin")):
                return k
    return None


def _peak_tok(art: dict) -> float | None:
    vals = [lv.get("output_throughput") for lv in bench_levels(art) if isinstance(lv.get("output_throughput"), (int, float))]
    return max(vals) if vals else None


def _concurrencies(rel: dict) -> list:
    return sorted({lv.get("concurrency") for a in rel["artifacts"].values() for lv in bench_levels(a)} - {None})


# ---- plots -----------------------------------------------------------------------------------------------
def _plot_training(release_dir: Path, rel: dict):
    import matplotlib.pyplot as plt

    panels = []
    for stage, log in train_logs(release_dir, rel).items():
        steps, loss = _series(log["history"], "loss")
        if steps:
            panels.append((f"{stage}: training loss", "loss", steps, loss))
        mkey = _margin_key(log["history"])
        if mkey:
            steps, margin = _series(log["history"], mkey)
            if steps:
                panels.append((f"{stage}: reward margin", mkey, steps, margin))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, ylabel, xs, ys) in zip(axes[0], panels):
        ax.plot(xs, ys, "-", marker="." if len(xs) < 60 else None, color="C1" if "margin" in title else "C0")
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_tradeoff(release_dir: Path, rel: dict):
    import matplotlib.pyplot as plt

    metric = headline_metric(rel)
    pts = []
    for name, a in rel["artifacts"].items():
        acc, size = (a.get("eval") or {}).get(metric), a.get("size_bytes") or (a.get("bench") or {}).get("size_bytes")
        if isinstance(acc, (int, float)) and size:
            pts.append((name, size / 2**20, acc, _peak_tok(a)))
    if not pts:
        return None
    top = max((p[3] for p in pts if p[3]), default=0) or 1
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for i, (name, mb, acc, tok) in enumerate(pts):
        area = 60 + 700 * tok / top if tok else 60
        if tok:
            ax.scatter(mb, acc, s=area, alpha=0.55, color=f"C{i % 10}")
            label = f"{name}\n{tok:.0f} tok/s"
        else:
            ax.scatter(mb, acc, s=area, facecolors="none", edgecolors=f"C{i % 10}")
            label = f"{name}\n(no bench)"
        lift = area ** 0.5 / 2 + 3  # the marker's radius in points, plus a gap
        ax.annotate(label, (mb, acc), fontsize=8, ha="center", va="bottom", xytext=(0, lift), textcoords="offset points")
    accs = [p[2] for p in pts]
    pad = max(0.05, (max(accs) - min(accs)) * 0.3)  # never zoom a flat line into apparent differences
    ax.set_ylim(min(accs) - pad, max(accs) + pad * 1.6)
    ax.margins(x=0.25)
    ax.set(xlabel="size on disk (MB)", ylabel=metric, title="Size vs accuracy (marker area: peak output tokens/s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_latency(release_dir: Path, rel: dict):
    """Small multiples, one panel per benched artifact, shared y: TTFT and E2E p50 (solid) and p95 (dashed)."""
    import math

    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    benched = [(n, a) for n, a in rel["artifacts"].items() if bench_levels(a)]
    if not benched:
        return None
    levels = _concurrencies(rel)
    cols = min(4, len(benched))
    rows = math.ceil(len(benched) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols + 0.6, 3.2 * rows), sharey=True, squeeze=False)
    for ax, (name, a) in zip(axes.flat, benched):
        lv = sorted(bench_levels(a), key=lambda x: x.get("concurrency") or 0)
        cs = [x.get("concurrency") for x in lv]
        for key, color in (("ttft", "C0"), ("e2e", "C3")):
            for pct, style in (("p50_ms", "-o"), ("p95_ms", "--s")):
                ys = [level_value(x, key, pct) for x in lv]
                ax.plot(cs, [float("nan") if y is None else y for y in ys], style, color=color, markersize=4,
                        label=f"{key.upper()} {pct[:-3]}")
        if levels and all(isinstance(c, (int, float)) and c > 0 for c in levels):
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=name, xlabel="concurrency")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(benched):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


PLOTS = {"training": _plot_training, "tradeoff": _plot_tradeoff, "latency": _plot_latency}
CAPTIONS = {"training": "Training loss (and the preference stage's reward margin) per logged step",
            "tradeoff": "Size vs accuracy vs tokens/s, one point per artifact",
            "latency": "Latency percentiles vs concurrency per artifact (solid p50, dashed p95)"}


def figures(release_dir: Path, rel: dict, errors: dict | None = None) -> dict[str, bytes]:
    """PNG bytes per plot the release has data for; {} when matplotlib is not installed.

    A plot that fails on odd data is left out and its error put in `errors`: a report never stops a release.
    """
    try:
        import matplotlib
    except ImportError:
        return {}
    import io

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for name, draw in PLOTS.items():
        try:
            fig = draw(Path(release_dir), rel)
        except Exception as e:  # noqa: BLE001 - shown on the page instead
            plt.close("all")
            if errors is not None:
                errors[name] = f"{type(e).__name__}: {e}"
            continue
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
            out[name] = buf.getvalue()
    return out


def plot_pngs(release_dir: Path, out_dir: Path, release: dict | None = None) -> list[Path]:
    """Write the report's plots as `<release>-<plot>.png` files into out_dir; return their paths."""
    rel = release if release is not None else load_release(release_dir, verify=False)
    name = rel.get("release") or Path(release_dir).name
    paths = []
    for plot, png in figures(Path(release_dir), rel).items():
        path = Path(out_dir) / f"{name}-{plot}.png"
        paths.append(write_file(path, png))
    return paths


# ---- html ------------------------------------------------------------------------------------------------
def _row(cells: list, head: bool = False) -> str:
    """A table row; a cell is text, or (text, css class, attrs). Text is escaped here."""
    tag, out = ("th" if head else "td"), []
    for c in cells:
        text, cls, attrs = (*c, "", "")[:3] if isinstance(c, tuple) else (c, "", "")
        klass = f' class="{cls}"' if cls else ""
        out.append(f"<{tag}{klass}{attrs}>{_e(text)}</{tag}>")
    return "<tr>" + "".join(out) + "</tr>"


def _table(head_rows: list[list], rows: list[list]) -> str:
    return ("<table><thead>" + "".join(_row(r, head=True) for r in head_rows) + "</thead><tbody>"
            + "".join(_row(r) for r in rows) + "</tbody></table>")


def _lat(lv: dict, key: str) -> str:
    a, b = level_value(lv, key, "p50_ms"), level_value(lv, key, "p95_ms")
    return "-" if a is None and b is None else f"{fmt(a, '.1f')} / {fmt(b, '.1f')}"


def _matrix(rel: dict) -> str:
    arts = rel["artifacts"]
    metrics, levels = key_metrics(rel, limit=6), _concurrencies(rel)
    base = (arts.get("merged") or {}).get("size_bytes")
    failed = {(g.get("artifact"), g.get("metric")) for g in rel.get("gates") or [] if g.get("passed") is False}
    span2 = ' rowspan="2"'
    top = [("artifact", "t", span2), ("format", "t", span2), ("runtime", "t", span2), ("size MB", "", span2),
           ("x smaller than merged", "", span2)]
    if metrics:
        top.append(("eval", "", f' colspan="{len(metrics)}"'))
    top.append(("parity vs parent", "", ' colspan="2"'))
    top += [(f"bench c={c}", "", ' colspan="3"') for c in levels]
    sub = list(metrics) + ["top-1", "mean KL"] + ["tok/s", "TTFT p50/p95 ms", "E2E p50/p95 ms"] * len(levels)
    rows = []
    for name, a in arts.items():
        ev, par, size = a.get("eval") or {}, a.get("parity") or {}, a.get("size_bytes")
        by_c = {lv.get("concurrency"): lv for lv in bench_levels(a)}
        row = [(name, "t"), (a.get("format", "-"), "t"), (a.get("runtime", "-"), "t"),
               fmt(size / 2**20 if size else None, ".2f"), fmt(base / size if base and size else None, ".2f") + "x"]
        row += [(fmt(ev.get(m), ".3f"), "bad" if (name, m) in failed else "") for m in metrics]
        row += [fmt(par.get("top1_agreement"), ".3f"), fmt(par.get("mean_kl"), ".1e")]
        for c in levels:
            lv = by_c.get(c, {})
            row += [fmt(lv.get("output_throughput"), ".0f"), _lat(lv, "ttft"), _lat(lv, "e2e")]
        rows.append(row)
    note = "" if levels else '<p class="muted">No bench results in this release.</p>'
    return _table([top, sub], rows) + note


def _gates(rel: dict) -> str:
    gates = rel.get("gates") or []
    if not gates:
        return '<p class="muted">No gates were set for this release.</p>'
    rows = []
    for g in gates:
        by = g.get("by")
        if by is None and isinstance(g.get("value"), (int, float)) and isinstance(g.get("threshold"), (int, float)):
            by = g["value"] - g["threshold"]
        ok = bool(g.get("passed"))
        if g.get("passed") is None:  # a rule on a stage the config turned off
            result, ok = g.get("reason") or "skipped", True
        else:
            result = "pass" if ok else "FAIL" + (f" ({g['reason']})" if g.get("reason") else "")
        rows.append([(g.get("artifact", "-"), "t"), (g.get("rule", "-"), "t"), fmt(g.get("value")),
                     fmt(g.get("baseline")), fmt(g.get("threshold")), fmt(by, "+.4g"),
                     (result, "t pass" if ok else "t fail")])
    return _table([[("artifact", "t"), ("rule", "t"), "value", "baseline", "threshold", "by", ("result", "t")]], rows)


def _stages(rel: dict) -> str:
    stages = rel.get("stages") or []
    if not stages:
        return '<p class="muted">No stages recorded.</p>'
    rows = [[(s.get("stage", "-"), "t"), (s.get("target") or "-", "t"), ("cached" if s.get("cached") else "run", "t"),
             fmt(s.get("wall_s"), ".1f"), (str(s.get("key") or "-")[:12], "t")] for s in stages]
    cached = sum(1 for s in stages if s.get("cached"))
    total = sum(s.get("wall_s") or 0 for s in stages)
    rows.append([("total", "t"), "", (f"{cached} of {len(stages)} cached", "t"), fmt(float(total), ".1f"), ""])
    return _table([[("stage", "t"), ("target", "t"), ("cached or run", "t"), "wall s", ("key", "t")]], rows)


def _all_eval(rel: dict) -> str:
    cols = eval_columns(rel)
    keys = sorted({k for ev in cols.values() for k in ev})
    if not keys:
        return '<p class="muted">No eval results in this release.</p>'
    rows = [[(k, "t")] + [fmt(ev.get(k), ".4g") for ev in cols.values()] for k in keys]
    return _table([[("metric", "t")] + list(cols)], rows)


def _deploy(rel: dict) -> str:
    dep = rel.get("deploy")
    if not isinstance(dep, dict):
        return '<p class="muted">Not deployed (no deploy stage in this release).</p>'
    rows = [[(k, "t"), (json.dumps(v) if isinstance(v, (list, dict)) else fmt(v), "t")] for k, v in flatten(dep).items()]
    return _table([[("field", "t"), ("value", "t")]], rows)


def render_html(release_dir: Path, rel: dict, pngs: dict[str, bytes] | None = None) -> str:
    """The whole page as a string (plots drawn unless `pngs` is given)."""
    errors: dict[str, str] = {}
    pngs = figures(release_dir, rel, errors) if pngs is None else pngs
    name = rel.get("release") or Path(release_dir).name
    verdict = str(rel.get("verdict", "unknown"))
    cls = verdict if verdict in ("shipped", "refused") else "other"
    failed = rel.get("failed") or []
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(name)}: {_e(verdict)}</title><style>{CSS}</style></head><body>",
        f"<h1>Release {_e(name)}</h1>",
        f'<div class="verdict {cls}">{_e(verdict.upper())}</div>',
        (f'<p class="meta">created {_e(rel.get("created_at", "-"))} &middot; code {_e(rel.get("code_version", "-"))} '
         f'&middot; wall {_e(fmt(rel.get("wall_s"), ".1f"))} s &middot; serves <code>{_e(rel.get("artifact", "-"))}</code> '
         f'&middot; base {_e((rel.get("config") or {}).get("base", "-"))}</p>'),
    ]
    if failed:
        parts.append('<ul class="failed">' + "".join(f"<li>{_e(line)}</li>" for line in failed) + "</ul>")
    elif verdict != "shipped":
        parts.append('<p class="failed">refused, but no failed gate line was recorded</p>')
    parts += ["<h2>Artifacts: eval and bench</h2>", _matrix(rel)]
    parts.append('<h2>At a glance</h2><div class="plots">')
    for plot, caption in CAPTIONS.items():
        if plot in pngs:
            b64 = base64.b64encode(pngs[plot]).decode()
            parts.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption class=\"muted\">{_e(caption)}</figcaption></figure>")
        elif plot in errors:
            parts.append(f'<p class="failed">{_e(caption)}: the plot failed ({_e(errors[plot])}).</p>')
        else:
            parts.append(f'<p class="muted">{_e(caption)}: no data in this release'
                         + ("" if pngs or plot != "training" else " (or matplotlib is not installed)") + ".</p>")
    parts.append("</div>")
    parts += ["<h2>Gates</h2>", _gates(rel),
              "<h2>Stages</h2>", _stages(rel), "<h2>Every eval metric</h2>", _all_eval(rel),
              "<h2>Deploy</h2>", _deploy(rel),
              "<h2>Config</h2><details><summary>the ship config of this release</summary><pre>"
              + _e(json.dumps(rel.get("config") or {}, indent=2, default=str)) + "</pre></details>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(release_dir: Path, release: dict | None = None) -> Path:
    """Write `report.html` into the release folder; `release` is release.json's dict when not yet on disk."""
    rel = release if release is not None else load_release(release_dir, verify=False)
    path = Path(release_dir) / "report.html"
    return write_file(path, render_html(Path(release_dir), rel))
