"""The benchmark's outputs: JSON, a side-by-side markdown table, and PNG plots (matplotlib Agg).

    paths = write_outputs(result, "bench/results.json")   # results.json, results.md, results-*.png
"""

from __future__ import annotations

import json
from pathlib import Path

from lifecycle.atomic import OWNER_ONLY, write_text_atomic

COLUMNS = ("target", "c", "req/s", "out tok/s", "TTFT p50/p99", "TPOT p50/p99", "ITL p50/p99",
           "E2E p50/p99", "errors", "RSS steady/peak MB", "GB/s")


def _pair(d: dict, a: str = "p50_ms", b: str = "p99_ms") -> str:
    if d.get(a) is None:
        return "-"
    return f"{d[a]:.1f} / {d[b]:.1f}"


def _num(v, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict) -> str:
    """Markdown: one header line per target (size, load time, RSS), then one row per (target, level)."""
    bw = result["machine"].get("memory_bandwidth_gbs")
    lines = [f"Metrics: {result['convention']} definitions; latencies in ms (p50 / p99); "
             f"GB/s = weight bytes x output tokens/s" + (f" (bound: measured memory bandwidth {bw:.1f} GB/s)" if bw else "")]
    lines.append("")
    for t in result["targets"]:
        if t["kind"] == "artifact":
            acc = f", {t['accuracy_metric']} {t['accuracy']:.3f}" if "accuracy" in t else ""
            lines.append(f"- **{t['label']}** ({t['format']}, {t['engine']}): size {t['size_bytes'] / 2**20:.2f} MB, "
                         f"weights {t['weight_bytes'] / 2**20:.2f} MB, load {t['load_s']:.1f} s, "
                         f"RSS idle {t['rss_idle_mb']:.0f} MB / steady {t['rss_steady_mb']:.0f} MB / "
                         f"peak {t['rss_peak_mb']:.0f} MB, errors {t['errors']}{acc}"
                         + (f", SERVER EXITED (code {t['server_exit_code']})" if t.get("server_exit_code") is not None else ""))
        else:
            lines.append(f"- **{t['label']}** (endpoint {t['url']}): errors {t['errors']}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for t in result["targets"]:
        for lv in t["levels"]:
            rss = (f"{lv['rss_steady_mb']:.0f} / {lv['rss_peak_mb']:.0f}" if "rss_peak_mb" in lv else "-")
            row = [t["label"], str(lv["concurrency"]), f"{lv['request_throughput']:.1f}",
                   f"{lv['output_throughput']:.1f}", _pair(lv["ttft"]), _pair(lv["tpot"]), _pair(lv["itl"]),
                   _pair(lv["e2e"]), str(lv["errors"]), rss, _num(lv.get("achieved_gbs"), "{:.3f}")]
            lines.append("| " + " | ".join(row) + " |")
    if any("goodput" in lv for t in result["targets"] for lv in t["levels"]):
        lines += ["", "Goodput (requests/s meeting every SLO):"]
        for t in result["targets"]:
            for lv in t["levels"]:
                g = lv.get("goodput")
                if g:
                    lines.append(f"- {t['label']} c={lv['concurrency']}: {g['requests_per_s']:.2f} req/s "
                                 f"({g['good_requests']}/{lv['requests']} within {g['slo']})")
    return "\n".join(lines) + "\n"


def plots(result: dict, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key in zip(axes, ("ttft", "tpot", "e2e")):
        for t in result["targets"]:
            cs = [lv["concurrency"] for lv in t["levels"]]
            for q, style in (("p50_ms", "-o"), ("p90_ms", ":^"), ("p99_ms", "--s")):
                ys = [lv[key][q] if lv[key][q] is not None else float("nan") for lv in t["levels"]]
                ax.plot(cs, ys, style, label=f"{t['label']} {q[:-3]}")
        _conc_axis(ax, result, "ms")
        ax.set_title(key.upper())
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Latency percentiles vs concurrency ({result['convention']})")
    fig.tight_layout()
    out.append(_save(fig, stem.with_name(stem.name + "-latency.png")))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for t in result["targets"]:
        cs = [lv["concurrency"] for lv in t["levels"]]
        axes[0].plot(cs, [lv["output_throughput"] for lv in t["levels"]], "-o", label=t["label"])
        axes[1].plot(cs, [lv["request_throughput"] for lv in t["levels"]], "-o", label=t["label"])
    for ax, yl in zip(axes, ("output tokens/s", "requests/s")):
        _conc_axis(ax, result, yl)
    axes[0].legend()
    fig.suptitle("Throughput vs concurrency")
    fig.tight_layout()
    out.append(_save(fig, stem.with_name(stem.name + "-throughput.png")))

    rated = [t for t in result["targets"] if "accuracy" in t]
    if rated:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        best = {t["label"]: max(lv["output_throughput"] for lv in t["levels"]) for t in rated}
        top = max(best.values()) or 1
        for t in rated:
            ax.scatter(t["size_bytes"] / 2**20, t["accuracy"], s=60 + 600 * best[t["label"]] / top, alpha=0.6)
            ax.annotate(f"{t['label']}\n{best[t['label']]:.0f} tok/s", (t["size_bytes"] / 2**20, t["accuracy"]),
                        fontsize=8, ha="center", va="bottom")
        ax.margins(0.2)
        ax.set(xlabel="size on disk (MB)", ylabel=rated[0]["accuracy_metric"],
               title="Size vs accuracy (marker area: peak output tokens/s)")
        fig.tight_layout()
        out.append(_save(fig, stem.with_name(stem.name + "-tradeoff.png")))
    return out


def _conc_axis(ax, result: dict, ylabel: str) -> None:
    from matplotlib.ticker import NullLocator

    levels = result["settings"]["concurrency"]
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel="concurrency", ylabel=ylabel)
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_text_atomic(path, buf.getvalue(), mode=OWNER_ONLY)
    return path


def write_outputs(result: dict, output: str | Path) -> list[Path]:
    """JSON at `output`, the table beside it (.md), and the plots (-latency/-throughput/-tradeoff .png)."""
    path = Path(output)
    write_text_atomic(path, json.dumps(result, indent=2, default=str) + "\n", mode=OWNER_ONLY)
    md = path.with_suffix(".md")
    write_text_atomic(md, table(result), mode=OWNER_ONLY)
    return [path, md, *plots(result, path.with_suffix(""))]
