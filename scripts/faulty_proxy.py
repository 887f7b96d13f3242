#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 reverse proxy for tests (python stdlib only).

Forwards every request to one upstream (moto's S3 server, normally) and, under
the control of a fault configuration, injects:

  * error  - answers with an HTTP error status (503 by default) instead of
             forwarding (the request body is drained first, so the client
             reads the answer on a healthy keep-alive connection);
  * reset  - closes the client's connection with a TCP RST and no reply:
               reset_when="before"   - before the request is forwarded
                                       (upstream never sees it),
               reset_when="after"    - after upstream answered (the request
                                       took effect, the response is lost),
               reset_when="mid_body" - after the response headers and about
                                       half of the response body were sent;
  * stall  - sleeps stall_seconds before forwarding (stall_when="before"), or
             after the response headers and half the body (stall_when=
             "mid_body"), then carries on normally.

Usage:
  faulty_proxy.py --upstream http://127.0.0.1:PORT [--listen-port 0]
                  [--port-file FILE] [--config JSON | --config-file FILE]

It listens on 127.0.0.1 only. With --listen-port 0 (default) the kernel picks
a free port; it is printed on stdout as "listening on 127.0.0.1:PORT" and
written to --port-file, if given, once the socket is listening.

Fault configuration (a JSON object; every key optional):
  seed           int    RNG seed (default 0). Decisions are a pure function of
                        (seed, index of the eligible request): exactly three
                        random draws are made per eligible request, so a run
                        with the same seed and the same request order gets the
                        same faults.
  methods        list   only requests with these methods are eligible, e.g.
                        ["PUT"] (default: all methods)
  path_regex     str    only requests whose path+query matches (re.search)
  body_regex     str    only requests whose body (read whole first; bodies up to 1 MiB
                        with a Content-Length, else never eligible) matches, e.g.
                        "gc/lease" to pick one key of an S3 multi-object delete
  error_status   int    status for error faults (default 503)
  error_first    int    the first N eligible requests get an error fault
  error_prob     float  afterwards each eligible request gets one with this
                        probability
  reset_first / reset_prob / reset_when ("before"|"after"|"mid_body")
  stall_first / stall_prob / stall_seconds (float, default 2) /
                stall_when ("before"|"mid_body")
  Precedence when several fire for one request: reset, then error; a stall
  (before) is applied first and may combine with either.

Control endpoint (on the proxy's own port; path never forwarded - S3 bucket
names cannot contain "_", so it cannot clash with a bucket):
  GET    /__faults   -> {"config": {...}, "counters": {...}}
  POST   /__faults   body = JSON config: replaces the config, re-seeds the
                     RNG and zeroes the counters; answers like GET
  DELETE /__faults   -> resets to "no faults" (and zeroes counters)
  e.g. curl -X POST -d '{"seed":1,"error_first":3}' http://127.0.0.1:PORT/__faults
The initial config comes from --config / --config-file or the environment
variable FAULTY_PROXY_CONFIG (JSON), else no faults.

Counters: requests (all forwarded-or-faulted requests), eligible, errors,
resets, stalls, forwarded, upstream_errors.

One log line per request goes to stderr.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

CHUNK = 64 * 1024
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
CONFIG_KEYS = {
    "seed": int,
    "methods": list,
    "path_regex": str,
    "body_regex": str,
    "error_status": int,
    "error_first": int,
    "error_prob": float,
    "reset_first": int,
    "reset_prob": float,
    "reset_when": str,
    "stall_first": int,
    "stall_prob": float,
    "stall_seconds": float,
    "stall_when": str,
}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.set({})

    def set(self, cfg):
        cfg = dict(cfg or {})
        for k, v in cfg.items():
            if k not in CONFIG_KEYS:
                raise ValueError(f"unknown config key {k!r}")
            t = CONFIG_KEYS[k]
            if v is not None and not isinstance(v, t) and not (t is float and isinstance(v, int)):
                raise ValueError(f"{k} must be {t.__name__}")
        if cfg.get("reset_when", "before") not in ("before", "after", "mid_body"):
            raise ValueError("reset_when must be before|after|mid_body")
        if cfg.get("stall_when", "before") not in ("before", "mid_body"):
            raise ValueError("stall_when must be before|mid_body")
        regex = re.compile(cfg["path_regex"]) if cfg.get("path_regex") else None
        body_regex = re.compile(cfg["body_regex"].encode()) if cfg.get("body_regex") else None
        with self.lock:
            self.cfg = cfg
            self.regex = regex
            self.body_regex = body_regex
            self.rng = random.Random(cfg.get("seed", 0))
            self.counters = dict(
                requests=0, eligible=0, errors=0, resets=0, stalls=0, forwarded=0, upstream_errors=0
            )

    def state(self):
        with self.lock:
            return {"config": self.cfg, "counters": dict(self.counters)}

    def count(self, key):
        with self.lock:
            self.counters[key] += 1

    def wants_body(self):
        with self.lock:
            return self.body_regex is not None

    def decide(self, method, path, body=None):
        """Returns (index or None, fault dict) for one incoming request (`body`: the whole
        body when it was read first, for body_regex)."""
        with self.lock:
            c = self.cfg
            self.counters["requests"] += 1
            methods = c.get("methods")
            if methods and method.upper() not in [m.upper() for m in methods]:
                return None, {}
            if self.regex and not self.regex.search(path):
                return None, {}
            if self.body_regex and (body is None or not self.body_regex.search(body)):
                return None, {}
            i = self.counters["eligible"]
            self.counters["eligible"] += 1
            r_stall, r_reset, r_err = self.rng.random(), self.rng.random(), self.rng.random()
            out = {}
            if i < c.get("stall_first", 0) or r_stall < c.get("stall_prob", 0.0):
                out["stall"] = (float(c.get("stall_seconds", 2.0)), c.get("stall_when", "before"))
                self.counters["stalls"] += 1
            if i < c.get("reset_first", 0) or r_reset < c.get("reset_prob", 0.0):
                out["reset"] = c.get("reset_when", "before")
                self.counters["resets"] += 1
            elif i < c.get("error_first", 0) or r_err < c.get("error_prob", 0.0):
                out["error"] = int(c.get("error_status", 503))
                self.counters["errors"] += 1
            return i, out


class ResetConnection(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faulty-proxy"
    timeout = 600  # idle keep-alive connections

    # ---- plumbing -------------------------------------------------------
    def setup(self):
        super().setup()
        self.upstream = None
        self.buffered = None
        self.continued = False

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        if self.upstream is not None:
            self.upstream.close()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def reset(self):
        """Abort the client connection with a TCP RST, sending nothing."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        try:
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True
        raise ResetConnection()

    def body_chunks(self):
        """Yields the client's request body (content-length or chunked), streaming; or the
        body read whole before (body_regex)."""
        if self.buffered is not None:
            body, self.buffered = self.buffered, None
            if body:
                yield body
            return
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            return
                left = size
                while left:
                    b = self.rfile.read(min(CHUNK, left))
                    if not b:
                        raise ConnectionError("eof in chunk")
                    left -= len(b)
                    yield b
                self.rfile.readline(3)  # CRLF after chunk data
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                b = self.rfile.read(min(CHUNK, left))
                if not b:
                    raise ConnectionError("eof in body")
                left -= len(b)
                yield b

    def has_body(self):
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower() or int(
            self.headers.get("Content-Length") or 0
        ) > 0

    def continue_if_expected(self):
        if self.continued:
            return
        self.continued = True
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()

    def send_simple(self, status, body, ctype="application/json", close=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # ---- dispatch -------------------------------------------------------
    def do_any(self):
        self.buffered = None
        self.continued = False
        try:
            if urllib.parse.urlsplit(self.path).path.rstrip("/") == "/__faults":
                return self.control()
            self.proxy()
        except ResetConnection:
            self.log_message('"%s" -> RESET', self.requestline)
        except (ConnectionError, BrokenPipeError, socket.timeout) as e:
            self.log_message('"%s" -> client connection error %r', self.requestline, e)
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_any

    def control(self):
        faults = self.server.faults
        if self.command == "POST":
            self.continue_if_expected()
            raw = b"".join(self.body_chunks())
            try:
                faults.set(json.loads(raw or b"{}"))
            except (ValueError, TypeError) as e:
                return self.send_simple(400, json.dumps({"error": str(e)}).encode())
        elif self.command == "DELETE":
            faults.set({})
        elif self.command not in ("GET", "HEAD"):
            return self.send_simple(405, b'{"error":"method not allowed"}')
        st = faults.state()
        self.log_message('"%s" control -> %s', self.requestline, json.dumps(st["config"]))
        self.send_simple(200, (json.dumps(st, indent=1) + "\n").encode())

    def proxy(self):
        faults = self.server.faults
        body = None
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if faults.wants_body() and not chunked and length is not None and int(length) <= 1 << 20:
            self.continue_if_expected()
            body = b"".join(self.body_chunks())
            self.buffered = body
        idx, f = faults.decide(self.command, self.path, body)
        tag = "" if idx is None else f" #{idx}"
        if f:
            self.log_message('"%s"%s fault %s', self.requestline, tag, f)

        stall = f.get("stall")
        if stall and stall[1] == "before":
            time.sleep(stall[0])
        if f.get("reset") == "before":
            self.reset()
        if "error" in f:
            # reply without forwarding; drain the body so keep-alive stays usable,
            # unless the client waits for 100-continue: then answer and close.
            if self.headers.get("Expect", "").lower() == "100-continue":
                close = True
            else:
                close = False
                for _ in self.body_chunks():
                    pass
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
                b"<Message>injected by faulty_proxy</Message></Error>"
            )
            self.send_simple(f["error"], body, ctype="application/xml", close=close)
            return

        self.forward(f)

    def connect_upstream(self):
        if self.upstream is None:
            u = self.server.upstream
            self.upstream = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        return self.upstream

    def forward(self, f):
        faults = self.server.faults
        self.continue_if_expected()
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        for attempt in (0, 1):
            conn = self.connect_upstream()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        conn.putheader(k, v)
                if chunked_in:
                    conn.putheader("Transfer-Encoding", "chunked")
                elif self.headers.get("Content-Length") is not None:
                    conn.putheader("Content-Length", self.headers["Content-Length"])
                conn.endheaders()
                break
            except OSError:
                # stale keep-alive connection to upstream: reconnect once
                conn.close()
                self.upstream = None
                if attempt:
                    raise
        try:
            for b in self.body_chunks():
                conn.send(b"%x\r\n%s\r\n" % (len(b), b) if chunked_in else b)
            if chunked_in:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
        except (ConnectionError, socket.timeout, http.client.HTTPException, OSError) as e:
            conn.close()
            self.upstream = None
            faults.count("upstream_errors")
            self.log_message('"%s" upstream error %r', self.requestline, e)
            if isinstance(e, ConnectionError) and "eof" in str(e):
                raise  # the client went away mid-body
            return self.send_simple(502, b"upstream error\n", ctype="text/plain", close=True)
        faults.count("forwarded")

        if f.get("reset") == "after":
            resp.read()
            self.reset()

        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        chunked_out = not no_body and length is None
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", length)
        if resp.will_close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

        if no_body:
            resp.read()
        else:
            # mid-body faults fire once half the body (or the first chunk of a
            # chunked body) has been sent
            mid = f.get("reset") == "mid_body" or (f.get("stall") and f["stall"][1] == "mid_body")
            fault_at = (int(length) // 2 if length is not None else 1) if mid else None
            sent = 0
            while True:
                want = CHUNK
                if fault_at is not None and length is not None:
                    want = max(1, min(CHUNK, fault_at - sent))
                b = resp.read1(want) if chunked_out else resp.read(want)
                if not b:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked_out else b)
                sent += len(b)
                if fault_at is not None and sent >= fault_at:
                    fault_at = None
                    self.wfile.flush()
                    if f.get("reset") == "mid_body":
                        resp.close()
                        conn.close()
                        self.upstream = None
                        self.reset()
                    time.sleep(f["stall"][0])
            if chunked_out:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if resp.will_close:
            conn.close()
            self.upstream = None
        self.log_message('"%s" -> %s', self.requestline, resp.status)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="http://HOST:PORT of the real server")
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--config", help="initial fault config (JSON)")
    ap.add_argument("--config-file", help="file holding the initial fault config (JSON)")
    a = ap.parse_args()

    up = urllib.parse.urlsplit(a.upstream)
    if up.scheme != "http" or not up.hostname:
        sys.exit("--upstream must be http://HOST:PORT")
    cfg = {}
    if a.config_file:
        with open(a.config_file) as fh:
            cfg = json.load(fh)
    elif a.config:
        cfg = json.loads(a.config)
    elif os.environ.get("FAULTY_PROXY_CONFIG"):
        cfg = json.loads(os.environ["FAULTY_PROXY_CONFIG"])

    srv = Server(("127.0.0.1", a.listen_port), Handler)
    srv.upstream = up
    srv.faults = Faults()
    srv.faults.set(cfg)
    port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, a.port_file)
    print(f"listening on 127.0.0.1:{port} -> {a.upstream}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
