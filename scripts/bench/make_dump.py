#!/usr/bin/env python3
"""Make a large synthetic page_owner dump by replaying real records with fresh PFNs and timestamps.

No guest big enough exists yet, so the benchmark dump is built from the records of real (small)
dumps: each output record is a source record chosen at random (so the stack mix follows the source),
its PFN line rewritten with a fresh, increasing, order-aligned PFN (and its pageblock number), its
``ts`` replaced by a fresh value and, in the 6.1 format, a non-zero ``free_ts`` by a fresh one too
(a zero ``free_ts`` stays zero, as for a page never freed, unless --fresh-free-ts). Deterministic for a
given seed.

Usage: make_dump.py SOURCE [SOURCE...] -o OUT (--records N | --size MB) [--seed S]
       make_dump.py SOURCE [SOURCE...] -o DIR --size MB --run N [--churn F] [--growth F]
SOURCE may be plain, .gz, .xz or .zst (detected by content).

``--run N`` writes a run instead of one dump: ``DIR/00-baseline.txt`` and ``DIR/NN-iterN.txt`` as one
boot would show them. Allocations keep their PFN and ts from one snapshot to the next (that is what makes
them the same allocation, pagelab/pageowner/identities.py); between snapshots a ``--churn`` share of them
is freed and the PFNs reused by new allocations (fresh ts, same order), and ``--growth`` more are added
past the highest PFN. Timestamps only move forward, like local_clock().
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pagelab.pageowner.inputs import open_input

_HEADER = re.compile(rb"^(?P<head>Page allocated via order (?P<order>\d+),.*?, ts )\d+(?P<tail> ns.*)$")
_FREE_TS = re.compile(rb"(free_ts )(\d+)( ns)")
_PFN = re.compile(rb"^PFN (?P<pfn>0x[0-9a-f]+|\d+) type (?P<type>\S+) Block \d+ type (?P<rest>.*)$")


class _Record:
    """One source record split around the parts that get fresh values."""

    __slots__ = ("free_ts", "hex_pfn", "order", "pfn_rest", "pfn_type", "rest", "ts_head", "ts_tail")

    def __init__(self, block: bytes) -> None:
        lines = block.split(b"\n")
        m = _HEADER.match(lines[0])
        p = _PFN.match(lines[1]) if len(lines) > 1 else None
        if m is None or p is None:
            raise ValueError(f"not a page_owner record: {lines[0][:80]!r}")
        self.order = int(m["order"])
        self.ts_head = m["head"]
        self.ts_tail = m["tail"]
        fm = _FREE_TS.search(self.ts_tail)
        self.free_ts = int(fm[2]) if fm else None
        self.hex_pfn = p["pfn"].startswith(b"0x")
        self.pfn_type = p["type"]
        self.pfn_rest = p["rest"]
        self.rest = b"\n".join(lines[2:])


def load_records(paths: list[str]) -> list[_Record]:
    """Every record of the source dumps, in order. Raises ValueError on a non-dump."""
    records: list[_Record] = []
    for path in paths:
        with open_input(path) as f:
            data = f.read().replace(b"\r\n", b"\n")
        records.extend(_Record(b) for b in data.split(b"\n\n") if b.strip())
    if not records:
        raise ValueError("no records in the sources")
    return records


def generate(
    records: list[_Record], out, *, count: int | None, size: int | None, seed: int, fresh_free_ts: bool = False
) -> tuple[int, int]:
    """Write replayed records to ``out`` until ``count`` records or ``size`` bytes; returns (records, bytes)."""
    rng = random.Random(seed)
    pfn = 0x100
    ts = 5_000_000_000
    written = n = 0
    batch: list[bytes] = []
    while (count is None or n < count) and (size is None or written < size):
        rec = rng.choice(records)
        pages = 1 << rec.order
        pfn = (pfn + pages - 1) // pages * pages  # heads of order-N blocks are aligned
        pfn += rng.choice((0, 0, 0, pages, 2 * pages))  # free holes between allocations
        ts += rng.randrange(1, 2_000_000)
        head = rec.ts_head + str(rng.randrange(1_000_000, ts)).encode()
        tail = rec.ts_tail
        if rec.free_ts or (fresh_free_ts and rec.free_ts is not None):
            fresh = str(rng.randrange(1_000_000, ts)).encode()
            tail = _FREE_TS.sub(rb"\g<1>" + fresh + rb"\g<3>", tail, count=1)
        pfn_text = (b"0x%x" % pfn) if rec.hex_pfn else b"%d" % pfn
        line2 = b"PFN %s type %s Block %d type %s" % (pfn_text, rec.pfn_type, pfn >> 9, rec.pfn_rest)
        block = b"%s%s\n%s\n%s\n\n" % (head, tail, line2, rec.rest)
        batch.append(block)
        written += len(block)
        n += 1
        pfn += pages
        if len(batch) >= 4096:
            out.write(b"".join(batch))
            batch.clear()
    out.write(b"".join(batch))
    return n, written


def _block(rec: _Record, pfn: int, ts: int) -> bytes:
    pfn_text = (b"0x%x" % pfn) if rec.hex_pfn else b"%d" % pfn
    line2 = b"PFN %s type %s Block %d type %s" % (pfn_text, rec.pfn_type, pfn >> 9, rec.pfn_rest)
    return b"%s%d%s\n%s\n%s\n\n" % (rec.ts_head, ts, rec.ts_tail, line2, rec.rest)


def _write(out, live: list[tuple[int, int, int]], records: list[_Record]) -> int:
    """Write ``(pfn, record index, ts)`` in PFN order (the kernel's order); returns the bytes written."""
    written = 0
    batch: list[bytes] = []
    for pfn, idx, ts in sorted(live):
        block = _block(records[idx], pfn, ts)
        batch.append(block)
        written += len(block)
        if len(batch) >= 4096:
            out.write(b"".join(batch))
            batch.clear()
    out.write(b"".join(batch))
    return written


def generate_run(
    records: list[_Record], out_dir: Path, *, size: int, iterations: int, seed: int, churn: float, growth: float
) -> list[tuple[Path, int, int]]:
    """Baseline and ``iterations`` snapshots of one simulated boot; returns (path, records, bytes) each."""
    rng = random.Random(seed)
    by_order: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        by_order.setdefault(rec.order, []).append(i)
    # Records are drawn uniformly: the mean block size turns --size into a record count.
    mean = sum(len(_block(r, 0x100000, 10**12)) for r in records) / len(records)
    live: list[tuple[int, int, int]] = []
    pfn, clock = 0x100, 5_000_000_000
    while len(live) * mean < size:
        idx = rng.randrange(len(records))
        pages = 1 << records[idx].order
        pfn = (pfn + pages - 1) // pages * pages + rng.choice((0, 0, 0, pages, 2 * pages))
        clock += rng.randrange(1, 20_000)
        live.append((pfn, idx, clock))
        pfn += pages
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for it in range(iterations + 1):
        if it:
            clock += 30_000_000_000  # an iteration: 30 s of guest time
            freed = rng.sample(range(len(live)), int(len(live) * churn))
            for i in freed:  # the PFN is reused by a new allocation of the same order
                old_pfn, old_idx, _ = live[i]
                live[i] = (old_pfn, rng.choice(by_order[records[old_idx].order]), clock - rng.randrange(1, 10**10))
            for _ in range(int(len(live) * growth)):
                idx = rng.randrange(len(records))
                pages = 1 << records[idx].order
                pfn = (pfn + pages - 1) // pages * pages
                live.append((pfn, idx, clock - rng.randrange(1, 10**10)))
                pfn += pages
        path = out_dir / (f"{it:02d}-baseline.txt" if it == 0 else f"{it:02d}-iter{it}.txt")
        with open(path, "wb") as out:
            done.append((path, len(live), _write(out, live, records)))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", metavar="SOURCE")
    ap.add_argument("-o", "--output", required=True, metavar="OUT")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--records", type=int, metavar="N", help="number of records to write")
    g.add_argument("--size", type=float, metavar="MB", help="stop after this many MB (10^6 bytes)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--run", type=int, metavar="N", help="write a baseline and N iterations into the directory OUT")
    ap.add_argument("--churn", type=float, default=0.1, help="--run: share freed and reused per iteration")
    ap.add_argument("--growth", type=float, default=0.01, help="--run: share added per iteration")
    ap.add_argument(
        "--fresh-free-ts",
        action="store_true",
        help="6.1 format: give every record a fresh non-zero free_ts (no two texts alike: the worst case)",
    )
    args = ap.parse_args(argv)
    records = load_records(args.sources)
    size = int(args.size * 1_000_000) if args.size is not None else None
    if args.run is not None:
        if size is None:
            ap.error("--run needs --size")
        for path, n, nbytes in generate_run(
            records,
            Path(args.output),
            size=size,
            iterations=args.run,
            seed=args.seed,
            churn=args.churn,
            growth=args.growth,
        ):
            print(f"{path}: {n} records, {nbytes} bytes")
        return 0
    with open(args.output, "wb") as out:
        n, nbytes = generate(
            records, out, count=args.records, size=size, seed=args.seed, fresh_free_ts=args.fresh_free_ts
        )
    print(f"{args.output}: {n} records, {nbytes} bytes (seed {args.seed}, {len(records)} source records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
