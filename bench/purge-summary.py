"""Markdown table of bench/purge.sh results: `purge-summary.py RESULTS.tsv...` (several files,
e.g. of an interrupted run and its continuation, are combined)."""
import csv, statistics, sys
rows = [r for path in sys.argv[1:] for r in csv.DictReader(open(path), delimiter="\t")]
names = {"engine": "this engine (`purge`, 8 batches in flight)",
         "s5cmd": "s5cmd 2.3.0 `rm --all-versions`",
         "rclone": "rclone 1.60 `delete --s3-versions` + `backend cleanup-hidden`",
         "s3api": "awscli 1.46 `s3api list-object-versions` + `delete-objects` loop",
         "s3rm": "awscli 1.46 `s3 rm --recursive` (current objects only: versions stay)",
         "engine-proxy": "this engine through the fault injector, no faults",
         "engine-faults": "this engine through the fault injector, a fifth of calls failing"}
rate = {}
for tool in names:
    rs = [r for r in rows if r["tool"] == tool]
    if rs:
        # What a purge left is not counted as deleted (`s3 rm` deletes no version: its objects
        # are the current objects it hid).
        done = lambda r: int(r["objects"]) - (0 if tool == "s3rm" else int(r["left"]))
        rate[tool] = (statistics.median(done(r) / float(r["seconds"]) for r in rs), rs)
best = max((v[0] for t, v in rate.items() if not t.startswith("engine") and t != "s3rm"),
           default=0)
print("| tool | rounds | objects per round | median seconds | median objects/s | vs best other | emulator CPU busy | API server+etcd CPU | left in bucket |")
print("|---|---|---|---|---|---|---|---|---|")
for tool, (r, rs) in sorted(rate.items(), key=lambda kv: -kv[1][0]):
    secs = statistics.median(float(x["seconds"]) for x in rs)
    busy = statistics.median(float(x["emulator_cpu"]) / float(x["seconds"]) for x in rs)
    api = statistics.median(float(x["api_cpu"]) / float(x["seconds"]) for x in rs)
    left = ", ".join(sorted({x["left"] for x in rs}))
    ratio = f"{r / best:.2f}x" if best else "-"
    print(f"| {names[tool]} | {len(rs)} | {rs[0]['objects']} | {secs:.1f} | {r:,.0f} | {ratio} | {busy:.0%} | {api:.0%} | {left} |")
eng = [r for r in rows if r["tool"] == "engine"]
if eng:
    cpu = statistics.median(float(r["cpu_seconds"]) / int(r["objects"]) * 1000 for r in eng)
    print(f"\nEngine CPU (user+sys of the `purge` process): {cpu * 1000:.0f} ms per 1000 objects (median).")
if "engine-proxy" in rate and "engine-faults" in rate:
    clean = statistics.median(float(r["seconds"]) for r in rate["engine-proxy"][1])
    faulty = statistics.median(float(r["seconds"]) for r in rate["engine-faults"][1])
    print(f"\nUnder a fifth of calls failing the engine took {faulty / clean:.2f}x its time "
          f"through the same proxy without faults (median {faulty:.1f} s vs {clean:.1f} s).")
