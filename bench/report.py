"""Print a pytest-benchmark JSON file as the Markdown table kept in bench/RESULTS.md.

Each group is one workload; the row named ``mvaccel`` (or starting with it) is ours, and every
other row gets ``ratio = its median / mvaccel's median`` (above 1: mvaccel is faster). Where a
benchmark recorded ``extra_info["bytes"]``, the table shows the bandwidth that median implies.

Usage: python bench/report.py RESULTS.json [MORE.json ...]
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict


def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    if "impl" in params:
        return str(params["impl"])
    m = re.search(r"\[(.*)\]", bench["name"])
    return m.group(1) if m else bench["name"]


def table(paths: list[str]) -> str:
    """Render the Markdown table of the benchmark JSON files in ``paths``."""
    groups: dict[str, list[dict]] = defaultdict(list)
    machine = ""
    for path in paths:
        data = json.load(open(path))
        cpu = data.get("machine_info", {}).get("cpu", {})
        machine = f"{cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores"
        for b in data["benchmarks"]:
            groups[b.get("group") or b["name"]].append(b)
    lines = [
        f"Machine: {machine}",
        "",
        "| workload | implementation | median (ms) | ratio vs mvaccel | GB/s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for group, rows in groups.items():
        ours = [r for r in rows if _impl(r).startswith("mvaccel")]
        base = ours[0]["stats"]["median"] if ours else None
        for r in sorted(rows, key=lambda r: r["stats"]["median"]):
            med = r["stats"]["median"]
            ratio = f"{med / base:.2f}" if base else ""
            nbytes = (r.get("extra_info") or {}).get("bytes")
            gbs = f"{nbytes / med / 1e9:.1f}" if nbytes else ""
            lines.append(f"| {group} | {_impl(r)} | {med * 1e3:.3f} | {ratio} | {gbs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table(sys.argv[1:]))
