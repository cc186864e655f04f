#!/usr/bin/env python3
"""Sums Nsight Compute's per-launch kernel times (and DRAM bytes, when measured) by kernel, largest first.

Input: `ncu --csv --page raw --metrics gpu__time_duration.sum[,dram__bytes_read.sum,dram__bytes_write.sum]`
output (stdin or a file), which may carry the profiled program's own lines before the table. Prints per
kernel name (template arguments and parameters cut, except CUTLASS's, whose name is in them) the total
milliseconds, launches, share of all kernel time and, with the DRAM metrics, the bytes moved and the
achieved GB/s (to hold against a copy's), then the totals.
Usage: ncu_summary.py [FILE] [--top N]
"""
import csv
import io
import re
import sys
from collections import defaultdict

TIME_MS = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
BYTES = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12}
TIME, READ, WRITE = "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum"


def short(name: str) -> str:
    # An anonymous namespace, as ncu spells it: "(anonymous namespace)", "<unnamed>", or with a kernel filter
    # (-k regex:...) "unnamed>" after the cut outer namespaces.
    name = re.sub(r"\(anonymous namespace\)|<?unnamed>", "anon", name)
    name = re.sub(r"\(.*", "", name)  # parameters
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
    if base.startswith(("Kernel", "device_kernel")):  # CUTLASS
        base += "<" + "".join(targs)[:40] + ">"
    return base


def number(text: str) -> float:
    return float(text.replace(",", "")) if text else 0.0


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
    name_col = header.index("Kernel Name")
    cols = {m: header.index(m) for m in (TIME, READ, WRITE) if m in header}
    units = rows[1] if len(rows) > 1 and not rows[1][0] else None  # a units row has no ID
    scale = {
        TIME: TIME_MS.get(units[cols[TIME]], 1e-6) if units else 1e-6,
        READ: BYTES.get(units[cols[READ]], 1.0) if units and READ in cols else 1.0,
        WRITE: BYTES.get(units[cols[WRITE]], 1.0) if units and WRITE in cols else 1.0,
    }
    ms, moved, launches = defaultdict(float), defaultdict(float), defaultdict(int)
    for r in rows[2 if units else 1 :]:
        if len(r) <= max(cols.values()) or not r[cols[TIME]]:
            continue
        k = short(r[name_col])
        ms[k] += number(r[cols[TIME]]) * scale[TIME]
        moved[k] += sum(number(r[cols[m]]) * scale[m] for m in (READ, WRITE) if m in cols)
        launches[k] += 1
    dram = READ in cols or WRITE in cols
    all_ms = sum(ms.values())
    print(f"{'kernel':<60} {'ms':>10} {'launches':>9} {'share':>7}" + (f" {'GB':>9} {'GB/s':>7}" if dram else ""))
    for k, t in sorted(ms.items(), key=lambda kv: -kv[1])[:top]:
        extra = f" {moved[k] / 1e9:>9.2f} {moved[k] / 1e6 / t:>7.0f}" if dram and t > 0 else ""
        print(f"{k[:60]:<60} {t:>10.3f} {launches[k]:>9} {100 * t / all_ms:>6.1f}%" + extra)
    total = sum(moved.values())
    extra = f" {total / 1e9:>9.2f} {total / 1e6 / all_ms:>7.0f}" if dram and all_ms > 0 else ""
    print(f"{'all kernels':<60} {all_ms:>10.3f} {sum(launches.values()):>9} {'':>7}" + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
