"""Pick the 200 Loghub lines of the hand-labelled test set (loghub_200.csv); run by hand only.

    .venv/bin/python training/data/loghub_testset/make_sample.py --out /tmp/loghub_200.unlabelled.csv
    .venv/bin/python training/data/loghub_testset/make_sample.py --check training/data/loghub_testset/loghub_200.csv

Reads the 14 Loghub 2k structured samples (``*_2k.log_structured.csv``, default: the repository's
copy in benchmarks/data/loghub, byte-identical to the project's shared datasets folder; ``--src``
picks another). The procedure, fixed so that anyone gets the same 200 rows:

- quota: 200 rows over the 14 systems, 14 each, plus one more for the 4 systems with the most
  distinct EventIds (ties broken by name);
- per system, the distinct EventIds are sorted and shuffled with ``random.Random(seed)``, the seed
  being the first 8 bytes of SHA-256("loghub-200:<system>") as a big-endian integer;
- round robin over that EventId order: each visit takes one line of that EventId, drawn with the
  same generator among the EventId's lines whose Content was not taken yet (rows in file order),
  until the quota is met; so every EventId gets a line before any EventId gets a second one;
- rows are written system by system (sorted by name), in pick order, with an empty
  ``target_label``: labels are added by hand (see README.md).

``--check`` compares a labelled file's ``system,source,log_message,event_id`` columns, row by row,
with what the procedure picks, and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SRC = ROOT / "benchmarks" / "data" / "loghub"
TOTAL = 200
SUFFIX = "_2k.log_structured.csv"
COLUMNS = ("system", "source", "log_message", "target_label", "event_id")


def _rng(system: str) -> random.Random:
    digest = hashlib.sha256(f"loghub-200:{system}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def read_samples(src: Path) -> dict[str, list[tuple[str, str]]]:
    """System name -> its (EventId, Content) rows in file order."""
    samples: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(src.glob("*" + SUFFIX)):
        with path.open(newline="", encoding="utf-8") as fh:
            samples[path.name[: -len(SUFFIX)]] = [(row["EventId"], row["Content"]) for row in csv.DictReader(fh)]
    if not samples:
        raise SystemExit(f"no *{SUFFIX} files in {src}")
    return samples


def quotas(samples: dict[str, list[tuple[str, str]]], total: int = TOTAL) -> dict[str, int]:
    base, extra = divmod(total, len(samples))
    by_templates = sorted(samples, key=lambda s: (-len({e for e, _ in samples[s]}), s))
    return {s: base + (1 if s in by_templates[:extra] else 0) for s in samples}


def pick(rows: list[tuple[str, str]], system: str, quota: int) -> list[tuple[str, str]]:
    rng = _rng(system)
    by_event: dict[str, list[str]] = defaultdict(list)
    for event_id, content in rows:
        if content not in by_event[event_id]:
            by_event[event_id].append(content)
    order = sorted(by_event)
    rng.shuffle(order)
    taken: set[str] = set()
    picked: list[tuple[str, str]] = []
    while len(picked) < quota:
        progressed = False
        for event_id in order:
            if len(picked) == quota:
                break
            left = [c for c in by_event[event_id] if c not in taken]
            if not left:
                continue
            content = rng.choice(left)
            taken.add(content)
            picked.append((event_id, content))
            progressed = True
        if not progressed:
            raise SystemExit(f"{system}: only {len(picked)} distinct lines, quota {quota}")
    return picked


def sample(src: Path = DEFAULT_SRC) -> list[dict[str, str]]:
    samples = read_samples(src)
    out = []
    for system, quota in sorted(quotas(samples).items()):
        for event_id, content in pick(samples[system], system, quota):
            out.append(
                {"system": system, "source": system, "log_message": content, "target_label": "", "event_id": event_id}
            )
    return out


def check(labelled: Path, src: Path) -> list[str]:
    """Differences between a labelled file and the procedure's pick (empty: the same rows)."""
    with labelled.open(newline="", encoding="utf-8") as fh:
        have = [tuple(row[c] for c in COLUMNS if c != "target_label") for row in csv.DictReader(fh)]
    want = [tuple(row[c] for c in COLUMNS if c != "target_label") for row in sample(src)]
    problems = [f"row {i + 2}: {h!r} != {w!r}" for i, (h, w) in enumerate(zip(have, want, strict=False)) if h != w]
    if len(have) != len(want):
        problems.append(f"{len(have)} rows, the procedure picks {len(want)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder of Loghub *_2k.log_structured.csv")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the unlabelled pick here ('-': stdout)")
    group.add_argument("--check", type=Path, help="compare a labelled file with the pick")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.check, args.src)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{args.check}: {'differs from' if problems else 'matches'} the pick from {args.src}")
        return 1 if problems else 0
    rows = sample(args.src)
    fh = sys.stdout if str(args.out) == "-" else args.out.open("w", newline="", encoding="utf-8")
    try:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if fh is not sys.stdout:
            fh.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
