"""Deduplication: exact (hash of the normalised text) and near-duplicate (MinHash LSH, datasketch).

    dd = Deduper(near=True, threshold=0.8, ngram=5)
    reason, first = dd.check("a.jsonl:3", text)   # (None, None) or ("duplicate_exact"|"duplicate_near", where)
    dd.clusters()                                 # [{"kept": where, "duplicates": [...], "kind": ...}, ...]

The first record of a cluster is kept; later ones are dropped. A near-duplicate candidate from LSH is
confirmed only if its estimated Jaccard similarity reaches the threshold, which removes most LSH false
positives. Shingles are word n-grams (or character n-grams) of the case-folded text.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict

_SPACE = re.compile(r"\s+")


def exact_key(text: str) -> bytes:
    """Case-folded text with whitespace collapsed, hashed: equal keys mean the same text up to case/spacing."""
    return hashlib.sha256(_SPACE.sub(" ", text.casefold()).strip().encode()).digest()


def shingles(text: str, n: int, unit: str = "word") -> set[bytes]:
    if unit == "char":
        s = _SPACE.sub(" ", text.casefold()).strip()
        return {s[i:i + n].encode() for i in range(max(1, len(s) - n + 1))}
    words = text.casefold().split()
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class Deduper:
    def __init__(self, exact: bool = True, near: bool = True, threshold: float = 0.8, ngram: int = 5,
                 unit: str = "word", num_perm: int = 128, seed: int = 1):
        self.exact, self.near = exact, near
        self.threshold, self.ngram, self.unit = threshold, ngram, unit
        self._seen: dict[bytes, str] = {}
        self._members: dict[str, list[tuple[str, str]]] = defaultdict(list)
        if near:
            from datasketch import MinHash, MinHashLSH

            self._MinHash = MinHash
            # crc32 is ~5x faster than datasketch's default sha1 and is mixed (fmix) before permuting.
            self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)
            # Weigh false negatives 9:1 over false positives: candidates are verified below, so an extra
            # candidate costs only a comparison, while a missed one is a duplicate kept.
            self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
            self._sigs: dict[int, object] = {}
            self._where: list[str] = []

    def _minhash(self, text: str):
        t = self._template
        m = self._MinHash(num_perm=t.num_perm, seed=t.seed, permutations=t.permutations, scheme=t.scheme,
                          hashfunc=zlib.crc32)
        m.update_batch(shingles(text, self.ngram, self.unit))
        return m

    def check(self, where: str, text: str) -> tuple[str | None, str | None]:
        """Register `text` under `where`; return the drop reason and the kept record it duplicates."""
        if self.exact:
            key = exact_key(text)
            first = self._seen.get(key)
            if first is not None:
                self._members[first].append((where, "exact"))
                return "duplicate_exact", first
        if self.near:
            m = self._minhash(text)
            for cand in sorted(self._lsh.query(m)):
                if float((m.hashvalues == self._sigs[cand]).mean()) >= self.threshold:
                    first = self._where[cand]
                    self._members[first].append((where, "near"))
                    return "duplicate_near", first
            key_id = len(self._where)
            self._where.append(where)
            self._lsh.insert(key_id, m)
            self._sigs[key_id] = m.hashvalues
        if self.exact:
            self._seen[key] = where
        return None, None

    def clusters(self) -> list[dict]:
        """Duplicate clusters, largest first: the kept record and the dropped ones with how they matched."""
        out = [{"kept": kept, "size": 1 + len(dups), "duplicates": [{"where": w, "match": k} for w, k in dups]}
               for kept, dups in self._members.items()]
        return sorted(out, key=lambda c: (-c["size"], c["kept"]))
