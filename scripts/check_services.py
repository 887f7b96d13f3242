#!/usr/bin/env python3
"""End-to-end check of the local test services started by scripts/services.sh.

  check_services.py [--env STATE_DIR/env]      run every check (default)
  check_services.py azure-mkcontainer ENDPOINT CONTAINER
        create an Azurite container with a Shared Key signed REST call
        (ENDPOINT like http://127.0.0.1:PORT/devstoreaccount1); 409 = exists = ok

Plain HTTP only (urllib/http.client), plus boto3 (a moto dependency) for one
SigV4-signed S3 round trip. Python stdlib otherwise. Exits non-zero on the
first failed check, printing what failed.
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The well-known Azurite / Azure storage emulator development account.
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_VERSION = "2021-08-06"

# never send loopback traffic through an HTTP proxy from the environment
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(method, url, body=None, headers=None, timeout=60):
    """Returns (status, headers, body bytes); HTTP errors are returned, not raised."""
    headers = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        # urllib would add application/x-www-form-urlencoded, on which moto hangs
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def expect(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")


def ok(msg):
    print(f"  ok  {msg}", flush=True)


def blob(n, seed):
    out = bytearray()
    h = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


# --------------------------------------------------------------- Azure ----
def az_request(method, endpoint, path, query=None, body=b"", headers=None):
    """Shared Key signed request against an Azurite path-style endpoint
    (endpoint = http://HOST:PORT/devstoreaccount1, path = /container[/blob])."""
    u = urllib.parse.urlsplit(endpoint)
    full_path = u.path.rstrip("/") + path
    query = query or {}
    h = {
        "x-ms-date": datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "x-ms-version": AZ_VERSION,
    }
    h.update(headers or {})
    if method in ("PUT", "POST") and not any(k.lower() == "content-type" for k in h):
        # urllib would otherwise add an (unsigned) form content type
        h["Content-Type"] = "application/octet-stream"
    length = str(len(body)) if body else ""
    canon_headers = "".join(
        f"{k.lower()}:{v.strip()}\n" for k, v in sorted(h.items(), key=lambda kv: kv[0].lower())
        if k.lower().startswith("x-ms-")
    )
    canon_res = f"/{AZ_ACCOUNT}{urllib.parse.quote(full_path)}" + "".join(
        f"\n{k.lower()}:{v}" for k, v in sorted(query.items())
    )
    hv = {k.lower(): v for k, v in h.items()}
    to_sign = "\n".join(
        [
            method,
            hv.get("content-encoding", ""),
            hv.get("content-language", ""),
            length,
            hv.get("content-md5", ""),
            hv.get("content-type", ""),
            "",  # Date (x-ms-date is used)
            hv.get("if-modified-since", ""),
            hv.get("if-match", ""),
            hv.get("if-none-match", ""),
            hv.get("if-unmodified-since", ""),
            hv.get("range", ""),
        ]
    ) + "\n" + canon_headers + canon_res
    sig = base64.b64encode(
        hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    h["Authorization"] = f"SharedKey {AZ_ACCOUNT}:{sig}"
    url = f"{u.scheme}://{u.netloc}{urllib.parse.quote(full_path)}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return fetch(method, url, body=body if method in ("PUT", "POST") else None, headers=h)


def azure_mkcontainer(endpoint, container):
    st, _, body = az_request("PUT", endpoint, f"/{container}", {"restype": "container"})
    if st == 201:
        print(f"created Azure container {container}")
    elif st == 409:
        print(f"Azure container {container} already exists")
    else:
        raise SystemExit(f"creating Azure container {container}: HTTP {st}: {body[:500]!r}")


def check_azure(env):
    ep, c = env["CAIRN_TEST_AZURE_ENDPOINT"], env["CAIRN_TEST_AZURE_CONTAINER"]
    name = f"check/{time.time_ns()}"
    data = blob(100_000, 3)
    st, _, b = az_request("PUT", ep, f"/{c}/{name}", body=data,
                          headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"})
    expect(st == 201, f"azure put blob: HTTP {st} {b[:300]!r}")
    st, _, b = az_request("GET", ep, f"/{c}/{name}")
    expect(st == 200 and b == data, f"azure get blob: HTTP {st}, {len(b)} bytes")
    st, _, b = az_request("GET", ep, f"/{c}", {"restype": "container", "comp": "list", "prefix": "check/"})
    expect(st == 200 and name.encode() in b, f"azure list: HTTP {st}")
    st, _, _ = az_request("DELETE", ep, f"/{c}/{name}")
    expect(st == 202, f"azure delete: HTTP {st}")
    ok(f"azure: signed put/get/list/delete of {len(data)} bytes in {c} at {ep}")


# ----------------------------------------------------------------- GCS ----
def check_gcs(env):
    ep, bk = env["CAIRN_TEST_GCS_ENDPOINT"], env["CAIRN_TEST_GCS_BUCKET"]
    sa = json.load(open(env["CAIRN_TEST_GCS_SERVICE_ACCOUNT"]))
    expect(sa.get("gcs_base_url") == ep and sa.get("disable_oauth") is True, f"service account file {sa}")
    name = f"check/{time.time_ns()}"
    data = blob(200_000, 4)
    q = urllib.parse.urlencode({"uploadType": "media", "name": name})
    st, _, b = fetch("POST", f"{ep}/upload/storage/v1/b/{bk}/o?{q}", data, {"Content-Type": "application/octet-stream"})
    expect(st == 200, f"gcs upload: HTTP {st} {b[:300]!r}")
    meta = json.loads(b)
    expect(int(meta["size"]) == len(data), f"gcs upload size {meta}")
    enc = urllib.parse.quote(name, safe="")
    st, _, b = fetch("GET", f"{ep}/storage/v1/b/{bk}/o/{enc}?alt=media")
    expect(st == 200 and b == data, f"gcs download: HTTP {st}, {len(b)} bytes")
    st, _, b = fetch("GET", f"{ep}/storage/v1/b/{bk}/o?prefix=check/")
    expect(st == 200 and name in [i["name"] for i in json.loads(b).get("items", [])], f"gcs list: HTTP {st}")
    st, _, _ = fetch("DELETE", f"{ep}/storage/v1/b/{bk}/o/{enc}")
    expect(st in (200, 204), f"gcs delete: HTTP {st}")  # real GCS: 204, fake-gcs-server: 200
    st, _, _ = fetch("GET", f"{ep}/storage/v1/b/{bk}/o/{enc}")
    expect(st == 404, f"gcs get after delete: HTTP {st}")
    ok(f"gcs: JSON-API upload/download/list/delete of {len(data)} bytes in {bk} at {ep}")


# ------------------------------------------------------------------ S3 ----
def sigv4(method, url, headers=None, key="test", secret="test", region="us-east-1"):
    """Returns headers with an AWS SigV4 Authorization (payload unsigned).
    moto 5 answers 403 to anonymous GETs, so S3 requests are signed."""
    u = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    h = dict(headers or {})
    h.update({"x-amz-date": amz_date, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    signed = {"host": u.netloc, **{k.lower(): v.strip() for k, v in h.items()}}
    names = sorted(k for k in signed if k == "host" or k.startswith("x-amz-") or k == "content-type")
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    )
    creq = "\n".join([
        method, urllib.parse.quote(u.path or "/", safe="/-_.~"), query,
        "".join(f"{k}:{signed[k]}\n" for k in names), ";".join(names), "UNSIGNED-PAYLOAD",
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    k = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    h["Authorization"] = f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    return h


def s3(method, url, body=None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "application/octet-stream")
    return fetch(method, url, body, sigv4(method, url, headers))


def s3_roundtrip(ep, bk, label, size=150_000):
    name = f"check/{time.time_ns()}"
    data = blob(size, 5)
    st, _, b = s3("PUT", f"{ep}/{bk}/{name}", data)
    expect(st == 200, f"{label} put: HTTP {st} {b[:300]!r}")
    st, _, b = s3("GET", f"{ep}/{bk}/{name}")
    expect(st == 200 and b == data, f"{label} get: HTTP {st}, {len(b)} bytes")
    return name


def check_s3(env):
    ep, bk = env["CAIRN_TEST_S3_ENDPOINT"], env["CAIRN_TEST_S3_BUCKET"]
    # moto accepts anonymous PUTs but answers 403 to anonymous GETs: sign.
    st, _, _ = fetch("GET", f"{ep}/{bk}/{s3_roundtrip(ep, bk, 's3')}")
    expect(st == 403, f"anonymous GET: expected 403 from moto, got {st}")
    ok(f"s3: SigV4 (stdlib) REST put/get in {bk} at {ep}; anonymous GET -> 403")

    # SigV4-signed, via boto3. AWS_CA_BUNDLE must not be set for a plain-http endpoint.
    os.environ.pop("AWS_CA_BUNDLE", None)
    import boto3  # noqa: E402  (moto depends on it)

    s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    key = f"check/boto3-{time.time_ns()}"
    s3.put_object(Bucket=bk, Key=key, Body=b"hello cairn")
    got = s3.get_object(Bucket=bk, Key=key)["Body"].read()
    expect(got == b"hello cairn", f"boto3 get {got!r}")
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bk, Prefix="check/").get("Contents", [])]
    expect(key in names, "boto3 list")
    ok("s3: boto3 (SigV4) put/get/list")


# --------------------------------------------------------------- proxy ----
def faults(env, cfg=None):
    ctl = env["CAIRN_TEST_S3_PROXY_CONTROL"]
    if cfg is None:
        st, _, b = fetch("GET", ctl)
    else:
        st, _, b = fetch("POST", ctl, json.dumps(cfg).encode(), {"Content-Type": "application/json"})
    expect(st == 200, f"proxy control: HTTP {st} {b[:300]!r}")
    return json.loads(b)


def raw_conn(ep):
    u = urllib.parse.urlsplit(ep)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def check_proxy(env):
    ep, bk = env["CAIRN_TEST_S3_PROXY_ENDPOINT"], env["CAIRN_TEST_S3_BUCKET"]

    # faults off
    faults(env, {})
    s3_roundtrip(ep, bk, "proxy")
    ok("proxy: faults off, put/get pass through")

    # keep-alive: several requests on one connection, content-length and chunked bodies
    c = raw_conn(ep)
    name = f"check/ka-{time.time_ns()}"
    data = blob(300_000, 6)
    c.request("PUT", f"/{bk}/{name}", body=data, headers=sigv4("PUT", f"{ep}/{bk}/{name}"))
    r = c.getresponse(); r.read()
    expect(r.status == 200, f"keep-alive put 1: {r.status}")
    sock1 = c.sock
    c.request("GET", f"/{bk}/{name}", headers=sigv4("GET", f"{ep}/{bk}/{name}"))
    r = c.getresponse(); b = r.read()
    expect(r.status == 200 and b == data, f"keep-alive get: {r.status}, {len(b)} bytes")
    expect(c.sock is sock1, "connection was not kept alive")
    chunked = f"{name}-chunked"
    c.request("PUT", f"/{bk}/{chunked}", body=iter([data[:1000], data[1000:200_000], data[200_000:]]),
              encode_chunked=True, headers=sigv4("PUT", f"{ep}/{bk}/{chunked}", {"Transfer-Encoding": "chunked"}))
    r = c.getresponse(); r.read()
    expect(r.status == 200, f"chunked put: {r.status}")
    c.request("GET", f"/{bk}/{chunked}", headers=sigv4("GET", f"{ep}/{bk}/{chunked}"))
    r = c.getresponse(); b = r.read()
    expect(r.status == 200 and b == data, f"chunked round trip: {r.status}, {len(b)} bytes (want {len(data)})")
    expect(c.sock is sock1, "connection was not kept alive")
    c.close()
    ok("proxy: keep-alive (4 requests, 1 connection), content-length and chunked request bodies")

    # large body streamed both ways (64 MiB, generated on the fly, never held whole by the proxy)
    big = 64 * 1024 * 1024
    piece = blob(1024 * 1024, 7)
    c = raw_conn(ep)
    t = time.time()
    c.putrequest("PUT", f"/{bk}/{name}-big")
    c.putheader("Content-Length", str(big))
    for k, v in sigv4("PUT", f"{ep}/{bk}/{name}-big").items():
        c.putheader(k, v)
    c.endheaders()
    for _ in range(big // len(piece)):
        c.send(piece)
    r = c.getresponse(); r.read()
    expect(r.status == 200, f"big put: {r.status}")
    c.request("GET", f"/{bk}/{name}-big", headers=sigv4("GET", f"{ep}/{bk}/{name}-big"))
    r = c.getresponse()
    n, hsh, want = 0, hashlib.sha256(), hashlib.sha256(piece * (big // len(piece))).hexdigest()
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        n += len(b)
        hsh.update(b)
    expect(r.status == 200 and n == big and hsh.hexdigest() == want, f"big get: {r.status}, {n} bytes")
    c.close()
    ok(f"proxy: 64 MiB put+get streamed in {time.time() - t:.1f}s")

    # 503 for the first 2 requests, then pass
    faults(env, {"seed": 1, "error_first": 2})
    url = f"{ep}/{bk}/{name}"
    sts = [s3("GET", url)[0] for _ in range(3)]
    expect(sts == [503, 503, 200], f"error_first=2 gave {sts}")
    ok("proxy: error_first=2 -> 503, 503, 200")

    # 503 on a PUT with a body, same connection must stay usable
    faults(env, {"seed": 1, "error_first": 1, "methods": ["PUT"]})
    c = raw_conn(ep)
    c.request("PUT", f"/{bk}/{name}-x", body=data, headers=sigv4("PUT", f"{ep}/{bk}/{name}-x"))
    r = c.getresponse(); r.read()
    expect(r.status == 503, f"put with error fault: {r.status}")
    c.request("PUT", f"/{bk}/{name}-x", body=data, headers=sigv4("PUT", f"{ep}/{bk}/{name}-x"))
    r = c.getresponse(); r.read()
    expect(r.status == 200, f"put after error fault: {r.status}")
    c.close()
    ok("proxy: 503 on a PUT drains the body, keep-alive connection reusable")

    # connection reset, before forwarding
    faults(env, {"seed": 1, "reset_first": 1})
    try:
        st = s3("GET", url)[0]
        raise SystemExit(f"FAIL: expected a connection reset, got HTTP {st}")
    except (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError) as e:
        ok(f"proxy: reset_first=1 -> {type(e).__name__}")
    expect(s3("GET", url)[0] == 200, "request after reset")

    # reset after forwarding: the PUT took effect but the client sees no response
    faults(env, {"seed": 1, "reset_first": 1, "reset_when": "after", "methods": ["PUT"]})
    lost = f"{name}-lost"
    try:
        s3("PUT", f"{ep}/{bk}/{lost}", b"lost response")
        raise SystemExit("FAIL: expected a connection reset")
    except (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError):
        pass
    st, _, b = s3("GET", f"{ep}/{bk}/{lost}")
    expect(st == 200 and b == b"lost response", f"object written despite reset: {st}")
    ok("proxy: reset_when=after -> client sees reset, object was written")

    # mid-body reset: client gets headers + part of the body, then a reset
    faults(env, {"seed": 1, "reset_first": 1, "reset_when": "mid_body"})
    c = raw_conn(ep)
    c.request("GET", f"/{bk}/{name}", headers=sigv4("GET", f"{ep}/{bk}/{name}"))
    r = c.getresponse()
    try:
        b = r.read()
        raise SystemExit(f"FAIL: mid-body reset: read {len(b)} bytes without error")
    except (http.client.IncompleteRead, ConnectionError) as e:
        ok(f"proxy: reset_when=mid_body -> status {r.status} then {type(e).__name__}")
    c.close()

    # stall
    faults(env, {"seed": 1, "stall_first": 1, "stall_seconds": 1.5})
    t = time.time()
    st = s3("GET", url)[0]
    dt = time.time() - t
    expect(st == 200 and dt >= 1.5, f"stall: HTTP {st} after {dt:.2f}s")
    t = time.time()
    s3("GET", url)
    expect(time.time() - t < 1.0, "second request should not stall")
    ok(f"proxy: stall_first=1, stall_seconds=1.5 -> answered after {dt:.2f}s")

    # probabilistic faults are deterministic per seed
    def pattern(seed):
        faults(env, {"seed": seed, "error_prob": 0.5})
        return "".join("E" if s3("HEAD", url)[0] == 503 else "." for _ in range(24))

    p1, p2, p3 = pattern(42), pattern(42), pattern(43)
    expect(p1 == p2, f"same seed, different faults: {p1} vs {p2}")
    expect("E" in p1 and "." in p1 and p1 != p3, f"patterns {p1} {p3}")
    st = faults(env)
    expect(st["counters"]["errors"] == p3.count("E"), f"counters {st}")
    ok(f"proxy: error_prob=0.5 seed 42 -> {p1} (twice), seed 43 -> {p3}")

    faults(env, {})


# ---------------------------------------------------------------- main ----
def load_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip("'\"")
    return env


def main(argv):
    if argv[:1] == ["azure-mkcontainer"]:
        if len(argv) != 3:
            raise SystemExit("usage: check_services.py azure-mkcontainer ENDPOINT CONTAINER")
        return azure_mkcontainer(argv[1], argv[2])
    if argv[:1] == ["--env"]:
        env = load_env(argv[1])
    else:
        state = os.environ.get("CAIRN_SERVICES_DIR", "/tmp/cairn-services")
        env = load_env(os.path.join(state, "env"))
    t = time.time()
    for name, fn in (("s3", check_s3), ("gcs", check_gcs), ("azure", check_azure), ("proxy", check_proxy)):
        print(f"{name}:", flush=True)
        fn(env)
    print(f"all service checks passed in {time.time() - t:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
