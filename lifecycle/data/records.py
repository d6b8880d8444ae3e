"""Read any prepare input (file, folder, dataset artifact, saved HF dataset) as normalised records.

    records = read_normalised("out/ds")          # every split of a dataset artifact, format auto-detected

Used where a command needs records but no cleaning (label export). Unlike `prepare`, a malformed record
here is an error: the command stops and lists where.
"""

from __future__ import annotations

import sys

from lifecycle.errors import UserError


def read_normalised(spec: str, fmt: str = "auto") -> list[dict]:
    from lifecycle.data import formats
    from lifecycle.data.collect import TEXT_KINDS, head, read, sources

    records: list[dict] = []
    errors: list[str] = []
    for src in sources([spec]):
        f = fmt
        if f == "auto":
            f = "text" if src.kind in TEXT_KINDS else formats.detect(head(src, 200))
        for item in read(src):
            if item.error is not None:
                errors.append(f"{item.where}: {item.error}")
                continue
            if f is None:
                errors.append(f"{item.where}: format not recognised")
                continue
            try:
                records.append(formats.normalise(item.obj, f))
            except formats.FormatError as e:
                errors.append(f"{item.where}: {f} record: {e}")
    for line in errors[:20]:
        print(line, file=sys.stderr)
    if errors:
        raise UserError(f"{len(errors)} record(s) in {spec} could not be read (listed above); "
                        "clean them with `lifecycle data prepare` first")
    if not records:
        raise UserError(f"{spec} holds no records")
    return records
