#!/usr/bin/env python3
"""Sums Nsight Compute's per-launch kernel times by kernel, largest first.

Input: `ncu --csv --page raw --metrics gpu__time_duration.sum ...` output (stdin or a file), which may
carry the profiled program's own lines before the table. Prints total milliseconds, launches and the share
of all kernel time per kernel name (templates and arguments cut to keep lines short), then the total.
Usage: ncu_summary.py [FILE] [--top N]
"""
import csv
import io
import re
import sys
from collections import defaultdict

SCALE_MS = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3, "ns": 1e-6, "us": 1e-3, "ms": 1.0}


def short(name: str) -> str:
    name = re.sub(r"\(.*", "", name.replace("(anonymous namespace)", "anon"))  # arguments
    depth, out, targs = 0, [], []
    for ch in name:  # template arguments apart from the kernel's own name
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
        if depth > 0 and not (depth == 1 and ch == "<"):
            targs.append(ch)
    base = "".join(out).replace("void ", "").strip().split("::")[-1]
    if base.startswith(("Kernel", "device_kernel")):  # CUTLASS: the name is in the template arguments
        base += "<" + "".join(targs)[:40] + ">"
    return base


def main() -> int:
    args = sys.argv[1:]
    top = 30
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    text = open(args[0]).read() if args else sys.stdin.read()
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        print("ncu_summary: no ncu CSV table in the input", file=sys.stderr)
        return 1
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header = rows[0]
    name_col, time_col = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    unit = rows[1][time_col] if len(rows) > 1 else "nsecond"
    body = rows[2:] if unit in SCALE_MS else rows[1:]
    scale = SCALE_MS.get(unit, 1e-6)
    total, count = defaultdict(float), defaultdict(int)
    for r in body:
        if len(r) <= max(name_col, time_col) or not r[time_col]:
            continue
        k = short(r[name_col])
        total[k] += float(r[time_col].replace(",", "")) * scale
        count[k] += 1
    all_ms = sum(total.values())
    print(f"{'kernel':<60} {'ms':>10} {'launches':>9} {'share':>7}")
    for k, ms in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{k[:60]:<60} {ms:>10.3f} {count[k]:>9} {100 * ms / all_ms:>6.1f}%")
    print(f"{'all kernels':<60} {all_ms:>10.3f} {sum(count.values()):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
