"""Objects for bench/export.sh, and a check of what the tools exported.

    export-objects.py fill N BUCKET        N objects of mixed sizes (layout below); prints
                                           "<objects> <bytes>"
    export-objects.py big MIB BUCKET       one object of MIB MiB, uploaded in 8 MiB parts as they
                                           are generated (never whole in memory)
    export-objects.py check BUCKET MANIFEST_KEY [--archive KEY] [DIR...]
        compares the export's manifest with the layout of `fill` (key, size, sha256), and
        with every local copy DIR (e.g. what `aws s3 cp` and `s5cmd cp` wrote); with --archive,
        also streams the tar archive and hashes each member. Prints one line, "ok ..." or what
        differs, and exits 1 on a difference.

The layout is a function of N alone: of every 10,000 objects, 4 are large (16-32 MiB), 80
medium (256 KiB - 4 MiB) and the rest small (1-64 KiB), sizes log-uniform within their class,
the classes shuffled over the keys; each object's bytes are random.Random(seed of its index).
At N = 10,000: 9,916 small, 80 medium, 4 large, 375 MiB.
"""
import hashlib
import io
import json
import math
import os
import random
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

KIB, MIB = 1024, 1024 * 1024
CLASSES = {"small": (1 * KIB, 64 * KIB), "medium": (256 * KIB, 4 * MIB), "large": (16 * MIB, 32 * MIB)}


def layout(n):
    """[(key, size, seed)] for N objects."""
    rng = random.Random(20261204)
    large, medium = max(1, n * 4 // 10000), max(1, n * 8 // 1000)
    kinds = ["large"] * large + ["medium"] * medium + ["small"] * (n - large - medium)
    rng.shuffle(kinds)
    out = []
    for i, kind in enumerate(kinds):
        lo, hi = CLASSES[kind]
        size = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        out.append((f"data/{i % 100:02d}/obj-{i:06d}.bin", size, i))
    return out


def body(size, seed):
    return random.Random(seed).randbytes(size)


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["TSO_AWS_ENDPOINT_URL"],
        verify=os.environ["AWS_CA_BUNDLE"],
        region_name=os.environ.get("BENCH_REGION", "eu-central-1"),
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                      retries={"total_max_attempts": 4, "mode": "standard"}),
    )


def fill(n, bucket):
    objects = layout(n)
    s3 = client()

    def put(obj):
        key, size, seed = obj
        s3.put_object(Bucket=bucket, Key=key, Body=body(size, seed))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        for _ in pool.map(put, objects, chunksize=16):
            pass
    total = sum(size for _, size, _ in objects)
    print(f"filled {bucket}: {len(objects)} objects, {total / MIB:.0f} MiB in "
          f"{time.monotonic() - start:.0f}s", file=sys.stderr)
    print(len(objects), total)


def big(mib, bucket):
    s3 = client()
    key, part_bytes = f"big/{mib}MiB.bin", 8 * MIB
    rng = random.Random(1)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts, left, number = [], mib * MIB, 1
    while left > 0:
        size = min(part_bytes, left)
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                              Body=rng.randbytes(size))["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
        left -= size
        number += 1
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    print(1, size)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def check(bucket, manifest_key, archive_key, dirs, n):
    s3 = client()
    lines = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read().decode().splitlines()
    header, entries = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    by_key = {e["key"]: e for e in entries}
    problems = []
    expected = {key: (size, seed) for key, size, seed in layout(n)} if n else None
    if expected is not None:
        if set(by_key) != set(expected):
            problems.append(f"manifest keys differ from the layout: {len(set(by_key) ^ set(expected))}")
        for key, (size, seed) in expected.items():
            e = by_key.get(key)
            if e and (e["size"] != size or e["sha256"] != hashlib.sha256(body(size, seed)).hexdigest()):
                problems.append(f"manifest: {key} size/sha256 differ from what was written")
    if header.get("objects") != len(entries):
        problems.append(f"manifest header says {header.get('objects')} objects, lists {len(entries)}")
    for d in dirs:
        files = {os.path.relpath(os.path.join(root, f), d)
                 for root, _, fs in os.walk(d) for f in fs}
        if files != set(by_key):
            problems.append(f"{d}: {len(files)} files, {len(files ^ set(by_key))} differ from the manifest's keys")
            continue
        bad = [k for k in files if sha256_file(os.path.join(d, k)) != by_key[k]["sha256"]]
        if bad:
            problems.append(f"{d}: {len(bad)} files differ from the manifest's sha256, e.g. {bad[0]}")
    if archive_key:
        by_path = {e["path"]: e for e in entries}
        stream = s3.get_object(Bucket=bucket, Key=archive_key)["Body"]
        seen, whole = 0, hashlib.sha256()

        class Hashing(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, b):
                data = stream.read(len(b))
                whole.update(data)
                b[:len(data)] = data
                return len(data)

        with tarfile.open(fileobj=io.BufferedReader(Hashing(), MIB), mode="r|") as tar:
            for m in tar:
                e = by_path.get(m.name)
                h = hashlib.sha256()
                f = tar.extractfile(m)
                while chunk := f.read(MIB):
                    h.update(chunk)
                if not e or e["size"] != m.size or e["sha256"] != h.hexdigest():
                    problems.append(f"archive member {m.name} differs from the manifest")
                seen += 1
        while stream.read(MIB):
            pass
        if seen != len(entries):
            problems.append(f"archive has {seen} members, manifest {len(entries)}")
        if whole.hexdigest() != header["archive"]["sha256"]:
            problems.append("archive sha256 differs from the manifest header's")
    if problems:
        print("MISMATCH: " + "; ".join(problems[:5]))
        sys.exit(1)
    what = ["manifest = layout" if expected is not None else "manifest read"]
    what += [f"{len(dirs)} local copies = manifest"] if dirs else []
    what += ["archive members and sha256 = manifest"] if archive_key else []
    print(f"ok ({len(entries)} objects: {', '.join(what)})")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fill":
        fill(int(args[0]), args[1])
    elif cmd == "big":
        big(int(args[0]), args[1])
    elif cmd == "check":
        n = int(os.environ.get("BENCH_N", "0"))
        archive = None
        if "--archive" in args:
            i = args.index("--archive")
            archive = args[i + 1]
            args = args[:i] + args[i + 2:]
        check(args[0], args[1], archive, args[2:], n)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
