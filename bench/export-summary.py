"""Markdown tables of bench/export.sh results: `export-summary.py RESULTS.tsv [EXTRA.tsv]`."""
import csv, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
extra = {}
if len(sys.argv) > 2:
    try:
        for line in open(sys.argv[2]):
            f = line.rstrip("\n").split("\t")
            extra[f[0]] = {"accepted": f[1], "archive_bytes": f[2]}
    except FileNotFoundError:
        pass
names = {"export": "this operator's export (`DataExportRequest`, the Job's `export`: tar + manifest + SHA-256 + signed record)",
         "awscli": "awscli 1.46 `s3 cp --recursive` (to local disk)",
         "s5cmd": "s5cmd 2.3.0 `cp 's3://bucket/*'` (to local disk)"}
MIB = 1024 * 1024
med = statistics.median
rounds = [r for r in rows if r["round"] != "big"]
by_tool = {t: [r for r in rounds if r["tool"] == t] for t in names}
by_tool = {t: rs for t, rs in by_tool.items() if rs}
secs = {t: med(float(r["seconds"]) for r in rs) for t, rs in by_tool.items()}
best = min((s for t, s in secs.items() if t != "export"), default=0)
if by_tool:
    print("| tool | rounds | objects | MiB | median seconds (each round) | MiB/s | objects/s | vs fastest other tool | tool CPU-s | tool peak RSS | emulator CPU-s (busy) | API server+etcd CPU-s | copy = manifest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tool, rs in sorted(by_tool.items(), key=lambda kv: secs[kv[0]]):
        s = secs[tool]
        each = ", ".join(f"{float(r['seconds']):.1f}" for r in sorted(rs, key=lambda r: int(r["round"])))
        objects, nbytes = int(rs[0]["objects"]), int(rs[0]["bytes"])
        busy = med(float(r["emulator_cpu"]) / float(r["seconds"]) for r in rs)
        emu = med(float(r["emulator_cpu"]) for r in rs)
        api = med(float(r["api_cpu"]) for r in rs)
        cpu = med(float(r["cpu_seconds"]) for r in rs)
        rss = max(int(r["rss_kib"]) for r in rs) / 1024
        ratio = f"{best / s:.2f}x" if best else "-"
        check = ", ".join(sorted({r["check"] for r in rs}))
        print(f"| {names[tool]} | {len(rs)} | {objects:,} | {nbytes / MIB:.0f} | {s:.1f} ({each}) | "
              f"{nbytes / MIB / s:.1f} | {objects / s:,.0f} | {ratio} | {cpu:.1f} | {rss:.0f} MiB | "
              f"{emu:.1f} ({busy:.0%}) | {api:.1f} | {check} |")
    print("\n\"vs fastest other tool\": that tool's median seconds over this one's (above 1 is faster).")
big = [r for r in rows if r["round"] == "big"]
if big or by_tool.get("export"):
    print("\n| export | objects | MiB | seconds | export CPU-s | export peak RSS | emulator CPU busy | bar: RSS below 64 MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in by_tool.get("export", []) + big:
        what = "one object" if r["round"] == "big" else f"round {r['round']}"
        rss = int(r["rss_kib"]) / 1024
        print(f"| {what} | {int(r['objects']):,} | {int(r['bytes']) / MIB:.0f} | {float(r['seconds']):.1f} | "
              f"{float(r['cpu_seconds']):.1f} | {rss:.1f} MiB | {float(r['emulator_cpu']) / float(r['seconds']):.0%} | "
              f"{'met' if rss < 64 else '**not met**'} |")
if extra:
    print("\n| request | seconds from creation to its Job | archive bytes |")
    print("|---|---|---|")
    for name, e in extra.items():
        print(f"| {name} | {e['accepted']} | {int(e['archive_bytes']):,} |" if e["archive_bytes"] else f"| {name} | {e['accepted']} | - |")
