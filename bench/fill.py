"""Fills versioned buckets identically for bench/purge.sh: `fill.py N BUCKET...`.

Key i (k/000000, k/000001, ...) gets 1 + i % 3 versions of 1 + i % 7 bytes, and keys with
i % 4 == 0 then get a delete marker, until the bucket holds at least N versions and markers.
Each bucket is filled by a thread pool; the layout is identical in every bucket (purge.sh
counts each bucket afterwards).
"""
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def layout(n):
    keys, total, i = [], 0, 0
    while total < n:
        versions, marker = 1 + i % 3, i % 4 == 0
        keys.append((f"k/{i:06d}", versions, marker, 1 + i % 7))
        total += versions + marker
        i += 1
    return keys, total


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["TSO_AWS_ENDPOINT_URL"],
        verify=os.environ["AWS_CA_BUNDLE"],
        region_name=os.environ.get("BENCH_REGION", "eu-central-1"),
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=64,
            # ministack sometimes fails a request under load (or restarts its server), so
            # requests are retried; a retry whose first attempt did land would add a version,
            # which bench/purge.sh detects by counting the bucket after the fill.
            retries={"total_max_attempts": 4, "mode": "standard"},
        ),
    )


def main():
    n, buckets = int(sys.argv[1]), sys.argv[2:]
    keys, total = layout(n)
    s3 = client()

    def write(args):
        bucket, (key, versions, marker, size) = args
        for _ in range(versions):
            s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)
        if marker:
            s3.delete_object(Bucket=bucket, Key=key)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for _ in pool.map(write, [(b, k) for b in buckets for k in keys], chunksize=64):
            pass
    secs = time.monotonic() - start
    print(f"filled {len(buckets)} buckets x {total} versions+markers ({len(keys)} keys) "
          f"in {secs:.0f}s ({len(buckets) * total / secs:.0f}/s)", file=sys.stderr)
    print(total)


if __name__ == "__main__":
    main()
