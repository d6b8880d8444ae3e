"""Per-request timings -> the benchmark's metrics, with vLLM's definitions (benchmarks/serve.py).

- TTFT: request sent -> first streamed chunk that carries text.
- TPOT: (E2E - TTFT) / (output tokens - 1), per request; requests with one output token have none.
- ITL: every gap between consecutive text chunks, pooled over requests. The server merges tokens
  produced within `stream_interval_ms` into one chunk, so an ITL can span several tokens.
- E2E: request sent -> last byte.
- Throughput: completed requests (and output tokens) / wall time of the level.
- Goodput: completed requests meeting every SLO (ttft_ms, tpot_ms, e2e_ms) / wall time.
Each latency is reported as mean, p50, p90, p95, p99 in milliseconds (linear-interpolated percentiles,
as numpy.percentile does).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from lifecycle.errors import UserError

CONVENTION = "vLLM benchmarks/serve.py"
PERCENTILES = (50, 90, 95, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2e_ms")


@dataclass
class RequestRecord:
    """One streamed request. Times are seconds from the moment the request was sent."""

    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk that carried text
    e2e: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] if self.chunk_times else None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    @property
    def itl(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    def to_dict(self) -> dict:
        return {"chunk_times": self.chunk_times, "e2e": self.e2e, "output_tokens": self.output_tokens,
                "prompt_tokens": self.prompt_tokens, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict) -> "RequestRecord":
        return cls(**{k: d[k] for k in ("chunk_times", "e2e", "output_tokens", "prompt_tokens", "error") if k in d})


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy.percentile's default)."""
    if not values:
        raise ValueError("percentile of an empty list")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def distribution(seconds: list[float]) -> dict[str, float | None]:
    """mean and p50/p90/p95/p99 in milliseconds (None when there are no values)."""
    if not seconds:
        return {"mean_ms": None, **{f"p{q}_ms": None for q in PERCENTILES}}
    ms = [1000 * v for v in seconds]
    return {"mean_ms": statistics.fmean(ms), **{f"p{q}_ms": percentile(ms, q) for q in PERCENTILES}}


def parse_slo(text: str | None, keys: tuple[str, ...] = SLO_KEYS) -> dict[str, float]:
    """'ttft_ms=200,e2e_ms=1000' -> {"ttft_ms": 200.0, "e2e_ms": 1000.0}."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        k = k.strip()
        if not sep or k not in keys:
            raise UserError(f"SLO '{part.strip()}' is not KEY=VALUE with KEY in {', '.join(keys)}; "
                            f"e.g. --slo {keys[0]}=500")
        try:
            out[k] = float(v)
        except ValueError:
            raise UserError(f"SLO '{part.strip()}': {v!r} is not a number") from None
    return out


def meets_slo(r: RequestRecord, slo: dict[str, float]) -> bool:
    if not r.ok:
        return False
    values = {"ttft_ms": r.ttft, "tpot_ms": r.tpot, "e2e_ms": r.e2e}
    for key, limit in slo.items():
        v = values[key]
        if v is not None and 1000 * v > limit:
            return False
        if v is None and key == "ttft_ms":
            return False
    return True


def summarize(records: list[RequestRecord], wall_s: float, slo: dict[str, float] | None = None) -> dict:
    """One concurrency level's metrics from its request records and wall time."""
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    wall = max(wall_s, 1e-9)
    res = {
        "requests": len(records), "completed": len(ok), "errors": len(records) - len(ok),
        "wall_s": wall_s, "output_tokens": out_tokens,
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        "request_throughput": len(ok) / wall,
        "output_throughput": out_tokens / wall,
        "ttft": distribution([r.ttft for r in ok if r.ttft is not None]),
        "tpot": distribution([r.tpot for r in ok if r.tpot is not None]),
        "itl": distribution([g for r in ok for g in r.itl]),
        "e2e": distribution([r.e2e for r in ok]),
    }
    if slo:
        good = sum(meets_slo(r, slo) for r in ok)
        res["goodput"] = {"slo": slo, "good_requests": good, "requests_per_s": good / wall}
    errs = sorted({r.error for r in records if r.error})
    if errs:
        res["error_samples"] = errs[:5]
    return res
