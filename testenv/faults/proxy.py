"""AWS fault injector for the tests: a plain-HTTP proxy in front of the emulator's HTTPS port.

    proxy.py --port P --upstream https://127.0.0.1:Q --ca CA --rate 0.2 --seed 7 --log calls.tsv

Each request is forwarded unchanged (the SigV4 signature covers the Host the client used, which
is kept; `X-Forwarded-Proto: https` tells the emulator the client side was TLS, as a TLS proxy
would) unless a fault is drawn for it, with probability --rate, from --faults:

  error    the service's own throttling or server error, not forwarded: S3 503 SlowDown or
           500 InternalError; KMS 400 ThrottlingException or 500 KMSInternalException;
           IAM/STS 400 Throttling or 500 ServiceFailure
  reset    the connection is closed before the request is forwarded
  lost     the request is forwarded and succeeds (or not) upstream; the answer never arrives
  latency  forwarded after 0.3 s

`--lose-first OPERATION` loses the first answer to that operation (e.g. `CreateKey`), for a
deterministic test of what a lost answer leaves behind.

Every request is logged as `service<TAB>operation<TAB>method<TAB>fault<TAB>upstream status`, so a
test can tell what happened (a lost response's status is the one the client never saw).
"""

import argparse
import asyncio
import random
import re
import ssl
import sys
from urllib.parse import parse_qs, urlsplit

FAULTS = ("error", "reset", "lost", "latency")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--log", required=True)
    p.add_argument("--lose-first", action="append", default=[],
                   help="operation whose first answer is lost, whatever the rate (repeatable)")
    return p.parse_args()


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return method, target, version, headers


def header(headers, name):
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


async def read_body(reader, headers):
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    return b""


def classify(method, target, headers, body):
    """(service, operation) of a request, from its signature scope and protocol."""
    auth = header(headers, "authorization") or ""
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
    service = m.group(1) if m else "unknown"
    amz_target = header(headers, "x-amz-target")
    if amz_target:
        return service, amz_target.split(".")[-1]
    if service in ("iam", "sts"):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
        return service, action
    query = urlsplit(target).query
    sub = query.split("&")[0].split("=")[0] if query else ""
    return service, f"{method} {sub}".strip()


def error_response(service, method, rng):
    server = rng.random() < 0.5
    if service == "s3":
        code, status = ("InternalError", 500) if server else ("SlowDown", 503)
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                f"<Message>injected</Message></Error>").encode()
        ctype = "application/xml"
    elif service == "kms":
        code, status = ("KMSInternalException", 500) if server else ("ThrottlingException", 400)
        body = f"{{\"__type\":\"{code}\",\"message\":\"injected\"}}".encode()
        ctype = "application/x-amz-json-1.1"
    else:
        code, status = ("ServiceFailure", 500) if server else ("Throttling", 400)
        kind = "Receiver" if server else "Sender"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
                f"<Message>injected</Message></Error><RequestId>injected</RequestId>"
                f"</ErrorResponse>").encode()
        ctype = "text/xml"
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Slow Down"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    # An answer to HEAD has no body (S3 sends only the status and headers).
    return head.encode() + (b"" if method == "HEAD" else body)


async def forward(upstream, ctx, method, target, headers, body):
    """Sends the request upstream on a fresh connection; returns (status, raw response)."""
    reader, writer = await asyncio.open_connection(
        upstream.hostname, upstream.port, ssl=ctx, server_hostname=upstream.hostname)
    try:
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in headers:
            if name.lower() not in ("connection", "content-length", "transfer-encoding",
                                    "x-forwarded-proto", "expect"):
                lines.append(f"{name}: {value}")
        lines += [f"Content-Length: {len(body)}", "Connection: close",
                  "X-Forwarded-Proto: https", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
        _, status, _, resp_headers = await read_head(reader)
        if method == "HEAD":
            resp_body = b""
        elif header(resp_headers, "content-length") is not None or \
                (header(resp_headers, "transfer-encoding") or "").lower() == "chunked":
            resp_body = await read_body(reader, resp_headers)
        else:
            resp_body = await reader.read()
    finally:
        writer.close()
    out = [f"HTTP/1.1 {status}"]
    for name, value in resp_headers:
        if name.lower() not in ("connection", "content-length", "transfer-encoding"):
            out.append(f"{name}: {value}")
    if method == "HEAD":
        length = header(resp_headers, "content-length")
        if length is not None:
            out.append(f"Content-Length: {length}")
    else:
        out.append(f"Content-Length: {len(resp_body)}")
    return status.split(" ")[0], "\r\n".join(out + ["", ""]).encode("latin-1") + resp_body


async def main():
    args = parse_args()
    upstream = urlsplit(args.upstream)
    ctx = ssl.create_default_context(cafile=args.ca)
    rng = random.Random(args.seed)
    kinds = [k for k in args.faults.split(",") if k]
    log = open(args.log, "w", buffering=1)
    lose_first = set(args.lose_first)

    async def serve(reader, writer):
        try:
            while True:
                try:
                    method, target, _, headers = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if (header(headers, "expect") or "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await read_body(reader, headers)
                service, operation = classify(method, target, headers, body)
                fault = rng.choice(kinds) if kinds and rng.random() < args.rate else "-"
                if operation in lose_first:
                    lose_first.discard(operation)
                    fault = "lost"
                status = "-"
                if fault == "error":
                    log.write(f"{service}\t{operation}\t{method}\t{fault}\t-\n")
                    writer.write(error_response(service, method, rng))
                elif fault == "reset":
                    log.write(f"{service}\t{operation}\t{method}\t{fault}\t-\n")
                    return
                else:
                    if fault == "latency":
                        await asyncio.sleep(0.3)
                    status, response = await forward(upstream, ctx, method, target, headers, body)
                    if fault == "lost":
                        log.write(f"{service}\t{operation}\t{method}\t{fault}\t{status}\n")
                        return
                    log.write(f"{service}\t{operation}\t{method}\t{fault}\t{status}\n")
                    writer.write(response)
                await writer.drain()
        except Exception as e:  # one broken exchange must not stop the proxy
            print(f"proxy: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
