"""AWS calls per tenant by operation, from the operator's /metrics text on stdin.

    calls-by-operation.py TENANTS BEFORE   (BEFORE: an earlier scrape's aws_calls_total lines)
"""
import re
import sys

PATTERN = re.compile(r'service="(\w+)",operation="(\w+)",mutating="(\w+)"')


def counts(lines):
    rows = {}
    for line in lines:
        if not line.startswith("tenant_storage_aws_calls_total{"):
            continue
        name, value = line.rsplit(" ", 1)
        m = PATTERN.search(name)
        if m:
            key = (m.group(3) == "true", m.group(1), m.group(2))
            rows[key] = rows.get(key, 0.0) + float(value)
    return rows


tenants = int(sys.argv[1])
with open(sys.argv[2]) as f:
    before = counts(f)
after = counts(sys.stdin)
for (mutating, service, op), n in sorted(after.items()):
    n -= before.get((mutating, service, op), 0.0)
    if n:
        kind = "write" if mutating else "read"
        print(f"  {kind:5}  {service:4} {op:32} {n / tenants:6.2f}")
