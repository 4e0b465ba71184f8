"""Every published figure in one table: figure, target, measured, pass or fail.

    .venv/bin/python -m bench.table            # every figure, as published
    .venv/bin/python -m bench.table --quick    # smaller runs, a few minutes
    .venv/bin/python -m bench.table --only memory bulk --markdown table.md

Runs each benchmark module named in ``MODULES`` in a process of its own (so
one's memory, imports and database never touch another's figures), through
its ``figures(quick)`` function, which returns rows of
``{"figure", "target", "measured", "passed"}``. A module that fails is a row
that says so, not a stopped table. The table names the commit measured
(with ``+changes`` when the working tree differs from it) and the load
average before and after, since the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The order of the targets: footprint, pages, CPU per check, scale,
# storage, bulk.
MODULES = ("memory", "dashboard", "map_page", "endpoint_page", "scale", "storage", "bulk")
MARKER = "BENCH-FIGURES "


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_module(name: str, quick: bool, timeout: float) -> tuple[list[dict], float]:
    """The rows of ``bench.<name>.figures(quick)``, run in a child process."""
    code = (f"import json, bench.{name} as m; rows = m.figures(quick={quick!r}); "
            f"print({MARKER!r} + json.dumps(rows), flush=True)")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return [_failed(name, f"did not finish in {timeout:.0f} s")], time.monotonic() - started
    elapsed = time.monotonic() - started
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):]), elapsed
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return [_failed(name, f"exit {done.returncode}: {last}")], elapsed


def _failed(name: str, why: str) -> dict:
    return {"figure": f"bench.{name}", "target": "runs", "measured": why, "passed": False}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| figure | target | measured | result |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['figure']} | {row['target']} | {row['measured']} | "
                     f"{'pass' if row['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each module's smaller run")
    parser.add_argument("--only", nargs="+", choices=MODULES, metavar="MODULE",
                        help=f"run only these ({', '.join(MODULES)})")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one module may take (default 3600)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    names = args.only or list(MODULES)
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    for name in names:
        print(f"bench.{name} ...", file=sys.stderr, flush=True)
        found, elapsed = run_module(name, args.quick, args.timeout)
        print(f"bench.{name}: {len(found)} figure(s) in {elapsed:.0f} s", file=sys.stderr, flush=True)
        rows.extend(found)
    header = (f"Commit `{commit()}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{'quick' if args.quick else 'full'} runs, load average {load_before:.1f} before and "
              f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores.")
    table = markdown(rows, header)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
