"""Kubernetes API fault injector for the tests: a plain-HTTP proxy in front of the API server.

    kube_proxy.py --port P --upstream https://127.0.0.1:Q --ca CA --conflict-rate 0.3 \
        --watch-cut 1,6 --seed 7 --log calls.tsv

Each request is forwarded unchanged (the client's bearer token included) and its answer streamed
back as it arrives, so watches work through it, unless:

  --conflict-rate R   a write to a status subresource (PATCH or PUT of .../status) is answered,
                      with probability R, 409 Conflict ("the object has been modified"), as the
                      API server answers a write whose precondition no longer holds; it is not
                      forwarded
  --watch-cut A,B     every watch is cut A to B seconds (uniformly drawn) after its answer began:
                      both connections are closed mid-stream, as when an API server restarts or
                      a load balancer drops idle streams

Each connection carries one request (the answer says `Connection: close`). Every request is
logged as `method<TAB>path<TAB>fault<TAB>upstream status`, with fault `conflict`, `cut` or `-`.
"""

import argparse
import asyncio
import json
import random
import ssl
import sys
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from proxy import header, read_body, read_head  # noqa: E402  (the AWS proxy's HTTP parsing)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--conflict-rate", type=float, default=0.0)
    p.add_argument("--watch-cut", default="",
                   help="A,B: cut every watch after A to B seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log", required=True)
    return p.parse_args()


def conflict(path):
    """The API server's answer to a write whose resourceVersion precondition failed."""
    parts = path.strip("/").split("/")
    name = parts[-2] if len(parts) >= 2 else ""
    status = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"Operation cannot be fulfilled on {name}: the object has been modified; "
                   "please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": name}, "code": 409,
    }
    body = json.dumps(status).encode()
    return (b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


async def pipe(reader, writer, until=None):
    """Copies bytes until EOF or, when `until` (a loop time) is given, until then."""
    loop = asyncio.get_running_loop()
    while True:
        timeout = None if until is None else until - loop.time()
        if timeout is not None and timeout <= 0:
            return "cut"
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
        except asyncio.TimeoutError:
            return "cut"
        if not chunk:
            return "-"
        writer.write(chunk)
        await writer.drain()


async def main():
    args = parse_args()
    upstream = urlsplit(args.upstream)
    ctx = ssl.create_default_context(cafile=args.ca)
    rng = random.Random(args.seed)
    cut = [float(x) for x in args.watch_cut.split(",")] if args.watch_cut else None
    log = open(args.log, "w", buffering=1)

    async def serve(reader, writer):
        up_writer = None
        try:
            try:
                method, target, _, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            body = await read_body(reader, headers)
            url = urlsplit(target)
            query = parse_qs(url.query)
            if (method in ("PATCH", "PUT") and url.path.endswith("/status")
                    and rng.random() < args.conflict_rate):
                log.write(f"{method}\t{url.path}\tconflict\t-\n")
                writer.write(conflict(url.path))
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection(
                upstream.hostname, upstream.port, ssl=ctx, server_hostname=upstream.hostname)
            lines = [f"{method} {target} HTTP/1.1"]
            for name, value in headers:
                if name.lower() not in ("connection", "content-length", "transfer-encoding",
                                        "host"):
                    lines.append(f"{name}: {value}")
            lines += [f"Host: {upstream.netloc}", f"Content-Length: {len(body)}",
                      "Connection: close", "", ""]
            up_writer.write("\r\n".join(lines).encode("latin-1") + body)
            await up_writer.drain()
            _, status, _, resp_headers = await read_head(up_reader)
            out = [f"HTTP/1.1 {status}"]
            out += [f"{n}: {v}" for n, v in resp_headers if n.lower() != "connection"]
            writer.write("\r\n".join(out + ["Connection: close", "", ""]).encode("latin-1"))
            watch = query.get("watch", [""])[0] in ("true", "1")
            until = None
            if watch and cut:
                until = asyncio.get_running_loop().time() + rng.uniform(*cut)
            fault = await pipe(up_reader, writer, until)
            log.write(f"{method}\t{url.path}\t{fault}\t{status.split(' ')[0]}\n")
        except Exception as e:  # one broken exchange must not stop the proxy
            print(f"kube proxy: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            if up_writer is not None:
                up_writer.close()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
