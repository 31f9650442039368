"""KVM against TCG, side by side: the same benchmark's results on both accelerators.

Reads ``benchmarks/results/kvm/NAME.json`` and ``benchmarks/results/tcg/NAME.json`` (as
written by ``benchmarks.policies`` and ``benchmarks.faults``), prints one row per workload
and policy (or fault scenario) with both accelerators' figures, and writes the pairs as
JSON when asked.

    .venv/bin/python -m benchmarks.compare [--results DIR] [--json compare.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ACCELERATORS = ("kvm", "tcg")
POLICY_FILES = ("policies", "policies-quick")
FAULT_FILE = "faults"

Row = dict[str, Any]


def load(results: Path, accel: str, name: str) -> list[Row]:
    path = results / accel / f"{name}.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    runs: list[Row] = doc["runs"] if isinstance(doc, dict) else doc  # older files: a list
    return runs


def pair(results: Path, name: str, key: tuple[str, ...]) -> list[Row]:
    """Rows keyed by ``key``, each with the KVM and the TCG run (None where one is missing)."""
    by_accel = {
        a: {tuple(r[k] for k in key): r for r in load(results, a, name)} for a in ACCELERATORS
    }
    keys: list[tuple[Any, ...]] = []
    for accel in ACCELERATORS:
        keys += [k for k in by_accel[accel] if k not in keys]
    return [
        {**dict(zip(key, k, strict=True)), **{a: by_accel[a].get(k) for a in ACCELERATORS}}
        for k in keys
    ]


def _policy_cell(run: Row | None) -> str:
    if run is None:
        return f"{'-':>38}"
    conv = "yes" if run["converged"] else "NO"
    down = run["downtime_ms"] if run["downtime_ms"] is not None else "-"
    return (
        f"{conv:>4}{run['total_s']:>8.2f}{run['bytes_over_ram']:>6.2f}{down!s:>6}"
        f"{run['guest_slowdown']:>7.1%}{run['verification_errors']:>4}"
    )


def print_policies(name: str, rows: list[Row]) -> None:
    print(f"== {name}: KVM | TCG  (conv, total s, bytes/RAM, downtime ms, slowdown, errors)")
    for row in rows:
        print(
            f"{row['workload']:<16}{row['policy']:<18}{_policy_cell(row['kvm'])}  |"
            f"{_policy_cell(row['tcg'])}"
        )
    print()


def _first(run: Row, *keys: str) -> Any:
    """The first of ``keys`` that the run has (results written by different versions)."""
    return next((run[k] for k in keys if run.get(k) is not None), None)


def _fault_cell(run: Row | None) -> str:
    if run is None:
        return f"{'-':>36}"
    rec = _first(run, "flowing_after_s", "time_to_recover_s")
    stall_ms = _first(run, "guest_stall_ms", "guest_max_gap_ms")
    if stall_ms is None and run.get("guest_gap_s") is not None:
        stall_ms = round(run["guest_gap_s"] * 1000)
    return (
        f"{run['outcome']:>10}{run['ended_on']:>4}{'-' if rec is None else f'{rec:.2f}':>7}"
        f"{run['total_s']:>7.2f}{'-' if stall_ms is None else f'{stall_ms:.0f}':>7}"
        f"{run['verification_errors']:>3}"
    )


def print_faults(rows: list[Row]) -> None:
    print(
        "== faults: KVM | TCG  (outcome, on, back->flowing s, total s, guest's longest stall "
        "ms, errors; the last run of each scenario)"
    )
    for row in rows:
        print(f"{row['scenario']:<22}{_fault_cell(row['kvm'])}  |{_fault_cell(row['tcg'])}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    parser.add_argument("--json", type=Path, help="write the pairs here")
    args = parser.parse_args(argv)
    doc: dict[str, list[Row]] = {}
    for name in POLICY_FILES:
        doc[name] = pair(args.results, name, ("workload", "policy"))
        if doc[name]:
            print_policies(name, doc[name])
    doc[FAULT_FILE] = pair(args.results, FAULT_FILE, ("scenario",))
    if doc[FAULT_FILE]:
        print_faults(doc[FAULT_FILE])
    if not any(doc.values()):
        print(f"compare: no results under {args.results}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
