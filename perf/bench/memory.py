"""RSS of a serving process tree, sampled in a background thread (psutil).

    with RssSampler(proc.pid, match="/tmp/bench-ray") as s:   # match: also count processes whose
        s.mark("c=1"); ...; s.mark(None)                      # command line holds this (Ray's temp dir)
    s.peak_bytes, s.steady_bytes("c=1")

The tree is the process and all its descendants; under Ray some processes (raylet, GCS, workers) are
re-parented away from the driver, so they are found by the session's temp dir in their command line.
RSS counts shared pages once per process, so the sum over a tree overstates what the tree costs
the machine; it is the figure `ps` and Kubernetes limits see.
"""

from __future__ import annotations

import statistics
import threading
import time


def tree_rss(pid: int, match: str | None = None) -> int:
    """Summed RSS in bytes of `pid`, its descendants and (with `match`) processes whose cmdline holds it."""
    import psutil

    procs: dict[int, "psutil.Process"] = {}
    try:
        root = psutil.Process(pid)
        procs[pid] = root
        procs.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    if match:
        for p in psutil.process_iter(["cmdline"]):
            if p.pid not in procs and match in " ".join(p.info["cmdline"] or []):
                procs[p.pid] = p
    total = 0
    for p in procs.values():
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


class RssSampler:
    """Samples `tree_rss` every `interval_s`; `mark(label)` tags the samples that follow."""

    def __init__(self, pid: int, match: str | None = None, interval_s: float = 0.2):
        self.pid, self.match, self.interval_s = pid, match, interval_s
        self.samples: list[tuple[str | None, int]] = []
        self._label: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> int:
        rss = tree_rss(self.pid, self.match)
        if rss:
            self.samples.append((self._label, rss))
        return rss

    def mark(self, label: str | None) -> None:
        self.sample()
        self._label = label

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_bytes(self) -> int:
        return max((b for _, b in self.samples), default=0)

    def steady_bytes(self, label: str | None = None) -> int:
        """Median RSS over the samples tagged `label` (all samples when None)."""
        vals = [b for lab, b in self.samples if label is None or lab == label]
        return int(statistics.median(vals)) if vals else 0

    def peak_for(self, label: str) -> int:
        return max((b for lab, b in self.samples if lab == label), default=0)


def wait_for(pred, timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return False
