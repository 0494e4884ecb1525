#!/usr/bin/env python3
"""Soak test for `paligemma serve`: many clients, good and hostile requests, for minutes.

Starts the server itself on 127.0.0.1 (port 0), runs N client threads that pick scenarios at
random (seeded) for the duration, polls GET /health and samples the server's RSS meanwhile, stops
the server (SIGINT, then SIGKILL after 10 s) and prints a summary with a PASS/FAIL line.

    python3 tools/soak.py --binary /tmp/soak-bin/paligemma --minutes 10 --clients 8 --json soak.json

Good scenarios: POST /v1/generate as JSON (sometimes several on one keep-alive connection), as
multipart, streamed (?stream=true or /v1/stream, read to the end), and POST /v1/chat/completions
with an image_url data URL (plain or streamed). Hostile ones: slow bodies (headers with a
Content-Length, a few bytes trickled, then close or silence), multipart forms with thousands of
tiny parts (1-5 MB), idle connections opened and left (at most 50 at a time, closed after
5-45 s), streams dropped after the first event, bad images (fixtures from
Tests/Fixtures/image/bad, garbage, truncated or corrupted good images), malformed JSON and
requests, and bodies over the limit (declared and chunked).

Goals (each a line of the verdict): no 5xx but 503 on any request; every good request answered
(no timeout within --good-timeout s, no dropped connection); the server alive to the end; RSS
under --max-rss-mb; /health p99 under 100 ms (and every poll answered within 2 s). 503 (or a
`busy` error event in a stream) is an allowed answer to a good request and counted apart.

The monitor runs in its own process (so the clients' threads cannot delay it through the GIL) and
also polls a trivial responder in a third process the same way: its latency (the "control") and
the monitor's wake-up lag show how much of a slow /health is the machine's load. Hostile answers
that are not failures but not expected either are listed as "unexpected" by scenario and variant.

Python 3 standard library only; it talks to 127.0.0.1 only, with raw sockets (no proxies).
"""

import argparse
import base64
import collections
import glob
import json
import multiprocessing
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"

GOOD = ("good_json", "good_multipart", "good_stream", "good_chat")
# Scenario -> weight. Good requests are about half of all picks.
WEIGHTS = {
    "good_json": 6, "good_multipart": 3, "good_stream": 3, "good_chat": 3,
    "slow_body": 1.5, "huge_multipart": 1, "idle_conn": 1.5, "stream_drop": 2,
    "bad_image": 3, "malformed": 3, "over_limit": 1,
}
# Answers expected from the hostile scenarios; others are listed as "unexpected" (not failures,
# unless 5xx but 503).
EXPECTED = {
    "slow_body": {400, 408, 413, "closed_by_client", "server_closed"},
    "huge_multipart": {400, 413, 503},
    "stream_drop": {200, 503},
    "bad_image": {400, 413, 415, 422, 503, 200},
    "malformed": {400, 404, 405, 413, 415, 422, 503},
    "over_limit": {413, "chunked_413"},
    "idle_conn": {"closed_by_client", "server_closed", 408, 400},
}
PROMPTS = ["caption en", "describe en", "detect circle", "detect circle ; square", "segment square",
           "segment circle", "ocr", "answer en how many shapes are there?", "caption de"]


class Timeout(Exception):
    pass


class ConnClosed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 client over raw sockets, with one deadline for the whole exchange.

class Conn:
    def __init__(self, port, deadline):
        self.deadline = deadline
        self.buf = b""
        self.sock = socket.create_connection((HOST, port), timeout=self.remaining())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        return left

    def send(self, data):
        self.sock.settimeout(self.remaining())
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise Timeout()

    def fill(self):
        self.sock.settimeout(self.remaining())
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout()
        if not data:
            raise ConnClosed()
        self.buf += data

    def readline(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ConnClosed("header line too long")
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def response_head(self):
        """(status, headers) of the next response."""
        line = self.readline()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnClosed("bad status line %r" % line[:80])
        status = int(parts[1])
        headers = {}
        while True:
            line = self.readline()
            if not line:
                break
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        return status, headers

    def body_pieces(self, headers):
        """The body as it arrives (chunked, Content-Length, or until close)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.readline():
                        pass
                    return
                yield self.read(size)
                self.read(2)
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                if not self.buf:
                    self.fill()
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    yield piece
                try:
                    self.fill()
                except ConnClosed:
                    if self.buf:
                        yield self.buf
                        self.buf = b""
                    return

    def body(self, headers):
        return b"".join(self.body_pieces(headers))


def request_bytes(method, path, headers, body, keep_alive=False):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % HOST]
    for k, v in headers.items():
        lines.append("%s: %s" % (k, v))
    if body is not None and "Transfer-Encoding" not in headers and "Content-Length" not in headers:
        lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: %s" % ("keep-alive" if keep_alive else "close"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# ---------------------------------------------------------------------------------------------
# Request bodies.

def load_images():
    paths = [os.path.join(ROOT, "Models/demo/example.png")]
    for ext in ("jpg", "png", "webp"):
        paths += sorted(glob.glob(os.path.join(ROOT, "Tests/Fixtures/image/inputs/*." + ext)))
    good = [(os.path.basename(p), open(p, "rb").read()) for p in paths if os.path.exists(p)]
    bad = [(os.path.basename(p), open(p, "rb").read())
           for p in sorted(glob.glob(os.path.join(ROOT, "Tests/Fixtures/image/bad/*")))]
    if not good:
        sys.exit("soak: no images found under %s" % ROOT)
    return good, bad


def mime_of(name):
    return {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}.get(
        name.rsplit(".", 1)[-1], "application/octet-stream")


def multipart(fields, image_name, image, boundary=None, extra_parts=()):
    boundary = boundary or "soak%016x" % random.getrandbits(64)
    out = []
    out.append(("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
                "Content-Type: %s\r\n\r\n" % (boundary, image_name, mime_of(image_name))).encode() + image + b"\r\n")
    for k, v in fields.items():
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (boundary, k, v)).encode())
    out.extend(p % {b"b": boundary.encode()} for p in extra_parts)
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def gen_fields(rng):
    f = {"prompt": rng.choice(PROMPTS), "max_new_tokens": rng.randint(8, 32)}
    if rng.random() < 0.3:
        f["temperature"] = round(rng.uniform(0.3, 1.0), 2)
        f["seed"] = rng.randint(0, 1 << 30)
    return f


def chat_body(rng, image_name, image, stream):
    url = "data:%s;base64,%s" % (mime_of(image_name), base64.b64encode(image).decode())
    body = {"model": "paligemma", "max_tokens": rng.randint(8, 32), "stream": stream,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": rng.choice(PROMPTS)},
                {"type": "image_url", "image_url": {"url": url}}]}]}
    if rng.random() < 0.3:
        body["temperature"] = 0.7
        body["seed"] = rng.randint(0, 1 << 30)
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------------------------
# Statistics.

def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.per = collections.defaultdict(lambda: {"count": 0, "outcomes": collections.Counter(),
                                                    "latencies": []})
        self.good = collections.Counter()
        self.failures = []      # (t, scenario, detail), first 50
        self.notes = []         # unexpected but not failures, first 50
        self.unexpected = collections.Counter()  # (scenario, variant, outcome) -> count
        self.t0 = time.monotonic()

    def record(self, scenario, outcome, latency=None, note=None, expected=None):
        with self.lock:
            s = self.per[scenario]
            s["count"] += 1
            s["outcomes"][outcome] += 1
            if latency is not None:
                s["latencies"].append(latency)
            if scenario in GOOD:
                if outcome == 200:
                    self.good["ok"] += 1
                elif outcome in (503, "busy_in_stream"):
                    self.good["busy_503"] += 1
                elif outcome == "timeout":
                    self.good["timeout"] += 1
                elif isinstance(outcome, int) and outcome >= 500:
                    self.good["5xx"] += 1
                elif isinstance(outcome, int):
                    self.good["other_status"] += 1
                else:
                    self.good["conn_error_or_bad_answer"] += 1
            exp = expected if expected is not None else EXPECTED.get(scenario)
            if exp is not None and outcome not in exp and not (isinstance(outcome, int) and outcome >= 500):
                self.unexpected[(scenario, note, str(outcome))] += 1
                if len(self.notes) < 50:
                    self.notes.append((round(time.monotonic() - self.t0, 1), scenario,
                                       str(outcome) + (" (%s)" % note if note else "")))

    def fail(self, scenario, detail):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append((round(time.monotonic() - self.t0, 1), scenario, detail[:400]))


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# Idle connections: a bounded pool, reaped by a watcher thread.

class IdlePool:
    MAX = 50

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = []   # (close_at, sock, opened_at)

    def room(self):
        with self.lock:
            return self.MAX - len(self.conns)

    def add(self, sock, close_at):
        with self.lock:
            if len(self.conns) >= self.MAX:
                return False
            self.conns.append((close_at, sock, time.monotonic()))
            return True

    def reap(self, stats, everything=False):
        now = time.monotonic()
        with self.lock:
            due = [c for c in self.conns if everything or c[0] <= now]
            self.conns = [c for c in self.conns if not (everything or c[0] <= now)]
        for _, sock, opened in due:
            outcome = "closed_by_client"
            try:
                sock.setblocking(False)
                data = sock.recv(4096)
                if data:
                    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
                    outcome = int(m.group(1)) if m else "garbage_reply"
                else:
                    outcome = "server_closed"
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                outcome = "server_closed"
            try:
                sock.close()
            except OSError:
                pass
            stats.record("idle_conn", outcome, now - opened)
            if isinstance(outcome, int) and outcome >= 500 and outcome != 503:
                stats.fail("idle_conn", "status %d on an idle connection" % outcome)


# ---------------------------------------------------------------------------------------------
# Scenarios. Each returns nothing and records its own outcomes.

class Client:
    def __init__(self, index, args, port, stats, images, bad_images, idle, seed):
        self.rng = random.Random(seed * 1000 + index)
        self.args, self.port, self.stats = args, port, stats
        self.images, self.bad_images, self.idle = images, bad_images, idle

    # -- helpers

    def exchange(self, scenario, raw, timeout, good=False, expect_json=None, note=None, expected=None):
        """Sends one request on a fresh connection and records the answer's status."""
        start = time.monotonic()
        conn = None
        try:
            conn = Conn(self.port, start + timeout)
            try:
                conn.send(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer early (413) and close; read what it said
            status, headers = conn.response_head()
            body = conn.body(headers)
            self.check(scenario, status, body, good, expect_json, time.monotonic() - start, note, expected)
            return status, body
        except Timeout:
            self.stats.record(scenario, "timeout", time.monotonic() - start, note)
            if good:
                self.stats.fail(scenario, "no answer within %d s" % timeout)
        except (ConnClosed, ConnectionError, OSError) as e:
            self.stats.record(scenario, "conn_error", time.monotonic() - start, note)
            if good:
                self.stats.fail(scenario, "connection error: %r" % (e,))
        finally:
            if conn:
                conn.close()
        return None, None

    def check(self, scenario, status, body, good, expect_json, latency, note=None, expected=None):
        outcome = status
        if status >= 500 and status != 503:
            self.stats.fail(scenario, "status %d%s: %s" % (status, " (%s)" % note if note else "",
                                                          body[:300].decode("utf-8", "replace")))
        if good and status == 200 and expect_json:
            try:
                expect_json(json.loads(body))
            except Exception as e:
                outcome = "bad_answer"
                self.stats.fail(scenario, "200 with an unreadable answer (%r): %r" % (e, body[:200]))
        self.stats.record(scenario, outcome, latency, note, expected)

    def image(self):
        return self.rng.choice(self.images)

    # -- good

    def good_json(self):
        name, img = self.image()
        n = 1 if self.rng.random() < 0.7 else self.rng.randint(2, 3)
        if n == 1:
            body = dict(gen_fields(self.rng), image=base64.b64encode(img).decode())
            raw = request_bytes("POST", "/v1/generate", {"Content-Type": "application/json"}, json.dumps(body).encode())
            self.exchange("good_json", raw, self.args.good_timeout, good=True, expect_json=lambda j: j["text"])
            return
        # Several on one keep-alive connection.
        start = time.monotonic()
        conn = None
        done = 0
        try:
            conn = Conn(self.port, start + self.args.good_timeout * n)
            for i in range(n):
                t = time.monotonic()
                body = dict(gen_fields(self.rng), image=base64.b64encode(img).decode())
                conn.send(request_bytes("POST", "/v1/generate", {"Content-Type": "application/json"},
                                        json.dumps(body).encode(), keep_alive=i < n - 1))
                status, headers = conn.response_head()
                answer = conn.body(headers)
                done += 1
                self.check("good_json", status, answer, True, lambda j: j["text"], time.monotonic() - t)
                if headers.get("connection", "").lower() == "close":
                    break
        except Timeout:
            self.stats.record("good_json", "timeout")
            self.stats.fail("good_json", "keep-alive request %d: no answer in time" % (done + 1))
        except (ConnClosed, ConnectionError, OSError) as e:
            self.stats.record("good_json", "conn_error")
            self.stats.fail("good_json", "keep-alive request %d: connection error %r" % (done + 1, e))
        finally:
            if conn:
                conn.close()

    def good_multipart(self):
        name, img = self.image()
        body, ctype = multipart(gen_fields(self.rng), name, img)
        raw = request_bytes("POST", "/v1/generate", {"Content-Type": ctype}, body)
        self.exchange("good_multipart", raw, self.args.good_timeout, good=True, expect_json=lambda j: j["text"])

    def stream_request(self, chat=False):
        name, img = self.image()
        if chat:
            return request_bytes("POST", "/v1/chat/completions", {"Content-Type": "application/json"},
                                 chat_body(self.rng, name, img, stream=True))
        path = self.rng.choice(["/v1/generate?stream=true", "/v1/stream"])
        if self.rng.random() < 0.5:
            body, ctype = multipart(gen_fields(self.rng), name, img)
        else:
            body = json.dumps(dict(gen_fields(self.rng), image=base64.b64encode(img).decode())).encode()
            ctype = "application/json"
        return request_bytes("POST", path, {"Content-Type": ctype}, body)

    def read_stream(self, scenario, chat, drop_after_first):
        start = time.monotonic()
        conn = None
        good = not drop_after_first
        try:
            conn = Conn(self.port, start + self.args.good_timeout)
            conn.send(self.stream_request(chat))
            status, headers = conn.response_head()
            if status != 200:
                self.check(scenario, status, conn.body(headers), good, None, time.monotonic() - start)
                return
            text = b""
            outcome = "incomplete_stream"
            for piece in conn.body_pieces(headers):
                text += piece
                if drop_after_first and b"\n\n" in text:
                    if b"busy" in text.split(b"\n\n")[0]:
                        outcome = "busy_in_stream"
                        break
                    outcome = 200
                    break
                if chat and b"data: [DONE]" in text:
                    break
                if not chat and (b"event: done" in text or b"event: error" in text) and text.endswith(b"\n\n"):
                    break
            if not drop_after_first:
                outcome = self.stream_outcome(scenario, text, chat)
            self.stats.record(scenario, outcome, time.monotonic() - start)
        except Timeout:
            self.stats.record(scenario, "timeout", time.monotonic() - start)
            if good:
                self.stats.fail(scenario, "stream not finished within %d s" % self.args.good_timeout)
        except (ConnClosed, ConnectionError, OSError) as e:
            self.stats.record(scenario, "conn_error", time.monotonic() - start)
            if good:
                self.stats.fail(scenario, "connection error: %r" % (e,))
        finally:
            if conn:
                conn.close()

    def stream_outcome(self, scenario, text, chat):
        events = [e for e in text.decode("utf-8", "replace").split("\n\n") if e.strip()]
        if chat:
            datas = [e[len("data: "):] for e in events if e.startswith("data: ")]
            for d in datas:
                if d != "[DONE]" and "error" in json.loads(d):
                    return self.stream_error(scenario, json.loads(d))
            if not datas or datas[-1] != "[DONE]":
                self.stats.fail(scenario, "chat stream without data: [DONE]: %r" % text[-200:])
                return "incomplete_stream"
            return 200
        last = events[-1] if events else ""
        if last.startswith("event: done"):
            json.loads(last.split("data: ", 1)[1])["text"]
            return 200
        if last.startswith("event: error"):
            return self.stream_error(scenario, json.loads(last.split("data: ", 1)[1]))
        self.stats.fail(scenario, "stream ended without done/error: %r" % text[-200:])
        return "incomplete_stream"

    def stream_error(self, scenario, j):
        code = j.get("error", {}).get("code")
        if code == "busy":
            return "busy_in_stream"
        self.stats.fail(scenario, "error event in a good stream: %s" % json.dumps(j)[:300])
        return "error_event:%s" % code

    def good_stream(self):
        self.read_stream("good_stream", chat=self.rng.random() < 0.25, drop_after_first=False)

    def good_chat(self):
        name, img = self.image()
        raw = request_bytes("POST", "/v1/chat/completions", {"Content-Type": "application/json"},
                            chat_body(self.rng, name, img, stream=False))
        self.exchange("good_chat", raw, self.args.good_timeout, good=True,
                      expect_json=lambda j: j["choices"][0]["message"]["content"])

    # -- hostile

    def stream_drop(self):
        self.read_stream("stream_drop", chat=self.rng.random() < 0.3, drop_after_first=True)

    def slow_body(self):
        rng = self.rng
        length = rng.randint(2000, 200000)
        path = rng.choice(["/v1/generate", "/v1/generate?stream=true", "/v1/chat/completions"])
        head = request_bytes("POST", path, {"Content-Type": "application/json", "Content-Length": str(length)}, b"")
        start = time.monotonic()
        silent = rng.random() < 0.3
        wait = self.args.idle_timeout + 15
        try:
            sock = socket.create_connection((HOST, self.port), timeout=5)
        except OSError:
            self.stats.record("slow_body", "conn_error")
            return
        try:
            sock.sendall(head)
            trickle_until = time.monotonic() + rng.uniform(2, 6)
            sent = 0
            while time.monotonic() < trickle_until and not self.stop.is_set():
                piece = b'{"image": "iVBORw0KGgo'[sent % 20:sent % 20 + rng.randint(1, 3)] or b" "
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(rng.uniform(0.3, 1.2))
            if not silent:
                self.stats.record("slow_body", "closed_by_client", time.monotonic() - start)
                return
            # Go silent and see whether the server gives up on the body (it should, after its idle timeout).
            sock.settimeout(wait)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                self.stats.record("slow_body", "no_close_within_%ds" % wait, time.monotonic() - start)
                return
            except OSError:
                data = b""
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data or b"")
            outcome = int(m.group(1)) if m else "server_closed"
            if isinstance(outcome, int) and outcome >= 500 and outcome != 503:
                self.stats.fail("slow_body", "status %d after a stalled body: %r" % (outcome, data[:300]))
            self.stats.record("slow_body", outcome, time.monotonic() - start)
        except OSError:
            self.stats.record("slow_body", "server_closed", time.monotonic() - start)
        finally:
            sock.close()

    def huge_multipart(self):
        rng = self.rng
        target = rng.randint(1, 5) << 20
        parts = rng.randint(2000, 10000)
        size = max(1, target // parts - 60)
        name, img = self.image()
        filler = b"x" * size
        extra = [b"--%(b)s\r\nContent-Disposition: form-data; name=\"f" + str(i).encode() + b"\"\r\n\r\n" + filler + b"\r\n"
                 for i in range(parts)]
        body, ctype = multipart(gen_fields(rng), name, img, extra_parts=extra)
        raw = request_bytes("POST", rng.choice(["/v1/generate", "/v1/generate?stream=true"]), {"Content-Type": ctype}, body)
        self.exchange("huge_multipart", raw, 120)

    def idle_conn(self):
        rng = self.rng
        n = min(self.idle.room(), rng.randint(1, 5))
        for _ in range(n):
            try:
                sock = socket.create_connection((HOST, self.port), timeout=5)
            except OSError:
                self.stats.record("idle_conn", "conn_error")
                continue
            r = rng.random()
            try:
                if r < 0.3:
                    sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
                elif r < 0.4:
                    sock.sendall(b"GE")
            except OSError:
                pass
            if not self.idle.add(sock, time.monotonic() + rng.uniform(5, 45)):
                sock.close()
        time.sleep(rng.uniform(0.1, 0.5))

    def bad_image(self):
        rng = self.rng
        r = rng.random()
        if r < 0.45 and self.bad_images:
            name, data = rng.choice(self.bad_images)
        elif r < 0.6:
            name, data = "garbage.jpg", os.urandom(rng.randint(1, 65536))
        elif r < 0.8:
            name, good = self.image()
            data = good[:rng.randint(1, max(1, len(good) - 1))]
        else:
            name, good = self.image()
            b = bytearray(good)
            for _ in range(rng.randint(1, 50)):
                i = rng.randrange(min(len(b), 64), len(b)) if len(b) > 64 else rng.randrange(len(b))
                b[i] = rng.randrange(256)
            data = bytes(b)
        f = gen_fields(rng)
        kind = rng.random()
        if kind < 0.4:
            raw = request_bytes("POST", "/v1/generate", {"Content-Type": "application/json"},
                                json.dumps(dict(f, image=base64.b64encode(data).decode())).encode())
        elif kind < 0.7:
            body, ctype = multipart(f, name, data)
            raw = request_bytes("POST", rng.choice(["/v1/generate", "/v1/generate?stream=true"]), {"Content-Type": ctype}, body)
        else:
            raw = request_bytes("POST", "/v1/chat/completions", {"Content-Type": "application/json"},
                                chat_body(rng, name, data, stream=rng.random() < 0.3))
        status, body = self.exchange("bad_image", raw, self.args.good_timeout)
        if status == 200 and body and b"event: error" in body and b'"internal"' in body:
            self.stats.fail("bad_image", "internal error event: %r" % body[-300:])

    def malformed(self):
        rng = self.rng
        name, img = self.image()
        b64 = base64.b64encode(img).decode()
        good = json.dumps(dict(gen_fields(rng), image=b64)).encode()
        j = lambda v: ("application/json", json.dumps(v).encode())
        variants = [
            ("truncated_json", lambda: ("application/json", good[:rng.randint(1, len(good) - 1)])),
            ("random_bytes", lambda: ("application/json", os.urandom(rng.randint(1, 4096)))),
            ("empty_body", lambda: ("application/json", b"")),
            ("image_not_string", lambda: ("application/json", b'{"image": 5, "prompt": "ocr"}')),
            ("prompt_array", lambda: j({"image": b64, "prompt": ["ocr"]})),
            ("bad_max_new_tokens", lambda: j({"image": b64, "prompt": "ocr", "max_new_tokens": rng.choice([-1, 0, 5000, 1.5, "8"])})),
            ("bad_temperature", lambda: j({"image": b64, "prompt": "ocr", "temperature": rng.choice([-1, "hot", [0.5]])})),
            ("unknown_field", lambda: j({"image": b64, "prompt": "ocr", "max_new_token": 8})),
            ("missing_image", lambda: j({"prompt": "ocr"})),
            ("missing_prompt", lambda: j({"image": b64})),
            ("bad_base64", lambda: j({"image": "!!not base64!!", "prompt": "ocr"})),
            ("image_token_in_prompt", lambda: j({"image": b64, "prompt": "<image>" * rng.randint(1, 3) + "caption en"})),
            ("prompt_too_long", lambda: j({"image": b64, "prompt": "x" * rng.randint(5000, 20000)})),
            ("blank_prompt", lambda: j({"image": b64, "prompt": "   "})),
            ("invalid_utf8", lambda: ("application/json", b'{"image": "' + b64.encode() + b'", "prompt": "\xff\xfe caption"}')),
            ("deep_nesting", lambda: ("application/json", b"[" * rng.randint(100, 100000) + b"]" * rng.randint(0, 50))),
            ("json_array", lambda: j([1, 2, 3])),
            ("multipart_no_boundary", lambda: ("multipart/form-data", good)),
            ("multipart_long_boundary", lambda: ("multipart/form-data; boundary=" + "b" * 200, good)),
            ("multipart_unterminated", lambda: ("multipart/form-data; boundary=xyz",
                                                b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nocr")),
            ("chat_http_image_url", lambda: j({"model": "x", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "ocr"}, {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]})),
            ("chat_messages_string", lambda: j({"messages": "hello"})),
            ("chat_n_3", lambda: j({"messages": [], "n": 3})),
            # JSON sent as text/plain or without a type: the server reads it as JSON (lenient), so
            # 200 is expected for /v1/generate.
            ("lenient_json_as_text_plain", lambda: ("text/plain", good)),
            ("lenient_json_without_type", lambda: (None, good)),
        ]
        name, make = rng.choice(variants)
        ctype, body = make()
        headers = {"Content-Type": ctype} if ctype else {}
        expected = None
        # Chat-shaped bodies go to the chat endpoint, the rest mostly to /v1/generate.
        if name.startswith("chat_") or (not name.startswith("lenient_") and rng.random() < 0.2):
            path = "/v1/chat/completions"
        else:
            path = rng.choice(["/v1/generate", "/v1/generate", "/v1/generate?stream=true", "/v1/stream"])
            if name.startswith("lenient_"):
                expected = {200, 415, 503}
        if rng.random() < 0.05:
            name, expected = "wrong_path", {404, 405}
            path, body = rng.choice([("/v1/nowhere", good), ("/health", good)])
        self.exchange("malformed", request_bytes("POST", path, headers, body), 60, note=name, expected=expected)

    def over_limit(self):
        rng = self.rng
        limit = self.args.max_body_mb << 20
        start = time.monotonic()
        if rng.random() < 0.75:
            # Declared over the limit: headers, a little body, then read the answer.
            length = limit + rng.randint(1, 64 << 20)
            head = request_bytes("POST", rng.choice(["/v1/generate", "/v1/chat/completions"]),
                                 {"Content-Type": "application/json", "Content-Length": str(length)}, b"")
            self.exchange("over_limit", head + b'{"image": "' + b"A" * rng.randint(0, 65536), 60)
            return
        # Chunked, no length: keep sending until the server answers (it must stop at the limit).
        conn = None
        try:
            conn = Conn(self.port, start + 120)
            conn.send(request_bytes("POST", "/v1/generate", {"Content-Type": "application/json",
                                                              "Transfer-Encoding": "chunked"}, b""))
            chunk = b"A" * (1 << 20)
            framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            sent = 0
            answered = False
            while sent < limit + (8 << 20):
                r, _, _ = select.select([conn.sock], [], [], 0)
                if r:
                    answered = True
                    break
                try:
                    conn.send(framed)
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                sent += len(chunk)
            if not answered:
                conn.send(b"0\r\n\r\n")
            status, headers = conn.response_head()
            body = conn.body(headers)
            elapsed = time.monotonic() - start
            if status >= 500 and status != 503:
                self.stats.fail("over_limit", "status %d for a chunked body over the limit" % status)
            if status == 200:
                self.stats.fail("over_limit", "a chunked body of %d MB was accepted" % (sent >> 20))
            # A 413 that only arrives after the server's idle timeout: the server stopped reading
            # without closing, and this client (which reads only when it cannot send) waited.
            slow = elapsed > self.args.idle_timeout * 0.8
            self.stats.record("over_limit", "chunked_%d%s" % (status, "_after_idle_timeout" if slow else ""), elapsed)
        except Timeout:
            self.stats.record("over_limit", "chunked_timeout", time.monotonic() - start)
        except (ConnClosed, ConnectionError, OSError):
            elapsed = time.monotonic() - start
            slow = elapsed > self.args.idle_timeout * 0.8
            self.stats.record("over_limit", "chunked_conn_error%s" % ("_after_idle_timeout" if slow else ""), elapsed)
        finally:
            if conn:
                conn.close()

    def run(self, stop, deadline, budget):
        self.stop = stop
        names = list(WEIGHTS)
        weights = [WEIGHTS[n] for n in names]
        while not stop.is_set() and time.monotonic() < deadline:
            if not budget.take():
                break
            scenario = self.rng.choices(names, weights)[0]
            try:
                getattr(self, scenario)()
            except Exception as e:  # a bug in the soak itself: note it, keep going
                self.stats.fail("soak_internal", "%s: %r" % (scenario, e))


class Budget:
    def __init__(self, n):
        self.left, self.lock = n, threading.Lock()

    def take(self):
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


# ---------------------------------------------------------------------------------------------
# Monitor, in its own process (so that the clients' threads cannot delay it through Python's GIL):
# GET /health every 0.5 s (2 s timeout), the server's RSS, fds and threads every second, and, as a
# control for the machine's own load, the same poll against a trivial responder in a third process.

def control_main(pipe):
    """A minimal HTTP responder: what a poll costs on this machine when the server does nothing."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(64)
    pipe.send(srv.getsockname()[1])
    body = b'{"status":"ok"}'
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n" % len(body)) + body
    while True:
        c, _ = srv.accept()
        c.settimeout(2)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            c.sendall(answer)
        except OSError:
            pass
        finally:
            c.close()


def poll(port, path="/health"):
    """(milliseconds, status, body) of one GET with a 2 s deadline; raises Timeout or OSError."""
    start = time.monotonic()
    conn = Conn(port, start + 2.0)
    try:
        conn.send(request_bytes("GET", path, {}, None))
        status, headers = conn.response_head()
        body = conn.body(headers)
        return (time.monotonic() - start) * 1000, status, body
    finally:
        conn.close()


def monitor_main(port, pid, control_port, t0, stop, out):
    r = {"health_ms": [], "health_slow": [], "health_fail": {}, "waiting_seen": {}, "control_ms": [],
         "lag_ms": [], "rss_kb": [], "fds": [], "threads": [], "failures": []}

    def fail(kind, detail):
        r["health_fail"][kind] = r["health_fail"].get(kind, 0) + 1
        if len(r["failures"]) < 50:
            r["failures"].append((round(time.monotonic() - t0, 1), "health", detail))

    def sample():
        try:
            with open("/proc/%d/status" % pid) as f:
                text = f.read()
            m = re.search(r"VmRSS:\s+(\d+) kB", text)
            if m:
                r["rss_kb"].append((round(time.monotonic() - t0, 1), int(m.group(1))))
            m = re.search(r"Threads:\s+(\d+)", text)
            if m:
                r["threads"].append(int(m.group(1)))
            r["fds"].append(len(os.listdir("/proc/%d/fd" % pid)))
        except OSError:
            pass

    next_health = time.monotonic()
    next_control = next_health + 0.25
    next_rss = next_health
    last_control = None
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_health:
            r["lag_ms"].append((now - next_health) * 1000)   # how late this process woke: the machine's load
            next_health += 0.5
            try:
                ms, status, body = poll(port)
                if status != 200:
                    fail("status_%d" % status, "GET /health answered %d" % status)
                else:
                    r["health_ms"].append(ms)
                    if ms > 100:
                        r["health_slow"].append((round(now - t0, 1), round(ms, 1), round(r["lag_ms"][-1], 1), last_control))
                    w = "waiting_%d" % min(json.loads(body).get("waiting", 0), 8)
                    r["waiting_seen"][w] = r["waiting_seen"].get(w, 0) + 1
            except Timeout:
                fail("timeout_2s", "GET /health not answered within 2 s")
            except Exception as e:
                fail("error", "GET /health failed: %r" % (e,))
        if now >= next_control:
            next_control += 0.5
            try:
                ms, _, _ = poll(control_port, "/")
                r["control_ms"].append(ms)
                last_control = round(ms, 1)
            except Exception:
                r["control_ms"].append(2000.0)
        if now >= next_rss:
            next_rss += 1.0
            sample()
        time.sleep(max(0.0, min(next_health, next_control, next_rss) - time.monotonic()))
    sample()
    out.put(r)


# ---------------------------------------------------------------------------------------------
# The server.

def start_server(args):
    cmd = [args.binary, "serve", "--model", args.model, "--port", "0", "--max-waiting", str(args.max_waiting)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tail = collections.deque(maxlen=200)
    port_box = []
    ready = threading.Event()

    def drain():
        for line in iter(proc.stdout.readline, b""):
            text = line.decode("utf-8", "replace").rstrip("\n")
            tail.append(text)
            m = re.search(r"PaliGemma server on http://127\.0\.0\.1:(\d+)/", text)
            if m and not port_box:
                port_box.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(180) or not port_box:
        proc.kill()
        sys.exit("soak: the server did not start:\n" + "\n".join(tail))
    return proc, port_box[0], tail


def stop_server(proc):
    if proc.poll() is not None:
        return {"exit": proc.returncode, "how": "already exited"}
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
        return {"exit": proc.returncode, "how": "SIGINT", "seconds": round(time.monotonic() - start, 2)}
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"exit": proc.returncode, "how": "SIGKILL after 10 s"}


def loadavg():
    try:
        return open("/proc/loadavg").read().strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="/tmp/soak-bin/paligemma")
    ap.add_argument("--model", default=os.path.join(ROOT, "Models/demo"))
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-waiting", type=int, default=8)
    ap.add_argument("--max-rss-mb", type=float, default=2048)
    ap.add_argument("--max-requests", type=int, default=500000, help="stop after this many scenarios in all")
    ap.add_argument("--good-timeout", type=int, default=120, help="seconds a good request may take")
    ap.add_argument("--max-body-mb", type=int, default=32, help="the server's --max-body-mb (its default)")
    ap.add_argument("--idle-timeout", type=int, default=30, help="the server's --idle-timeout (its default)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = ap.parse_args()
    if not (0 < args.minutes <= 120 and 1 <= args.clients <= 64):
        sys.exit("soak: --minutes must be in (0, 120] and --clients in 1…64")

    images, bad_images = load_images()
    load_start = loadavg()
    proc, port, log_tail = start_server(args)
    print("soak: server pid %d on port %d; %d clients for %g min; seed %d; load %s"
          % (proc.pid, port, args.clients, args.minutes, args.seed, load_start), flush=True)

    stats = Stats()
    idle = IdlePool()
    stop = threading.Event()
    mp = multiprocessing.get_context("spawn")
    pipe_r, pipe_w = mp.Pipe(duplex=False)
    control = mp.Process(target=control_main, args=(pipe_w,), daemon=True)
    control.start()
    control_port = pipe_r.recv()
    mon_stop, mon_out = mp.Event(), mp.Queue()
    monitor = mp.Process(target=monitor_main, args=(port, proc.pid, control_port, stats.t0, mon_stop, mon_out), daemon=True)
    monitor.start()
    died = []

    def watch():  # idle connections closed when due; the server's death noticed at once
        while not stop.is_set():
            if proc.poll() is not None and not died:
                died.append(proc.returncode)
                stats.fail("server", "the server exited with %s during the run" % proc.returncode)
                stop.set()
            idle.reap(stats)
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + args.minutes * 60
    budget = Budget(args.max_requests)
    clients = [Client(i, args, port, stats, images, bad_images, idle, args.seed) for i in range(args.clients)]
    threads = [threading.Thread(target=c.run, args=(stop, deadline, budget), daemon=True) for c in clients]
    for t in threads:
        t.start()

    last_report = time.monotonic()
    try:
        while time.monotonic() < deadline and not died and any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                with stats.lock:
                    total = sum(s["count"] for s in stats.per.values())
                    good = dict(stats.good)
                try:
                    rss = int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % proc.pid).read()).group(1)) // 1024
                except (OSError, AttributeError):
                    rss = -1
                print("soak: %5.0f s  %d requests  good %s  RSS %d MB  failures %d  load %s"
                      % (time.monotonic() - stats.t0, total, good, rss, len(stats.failures), loadavg()), flush=True)
    except KeyboardInterrupt:
        print("soak: interrupted", flush=True)
    stop.set()
    # Clients finish the scenario they are in (bounded by its timeout).
    for t in threads:
        t.join(args.good_timeout + 30)
    stuck = sum(t.is_alive() for t in threads)
    watcher.join(5)
    idle.reap(stats, everything=True)
    elapsed = time.monotonic() - stats.t0
    mon_stop.set()  # the monitor takes a last sample of the server before it is stopped
    try:
        m = mon_out.get(timeout=30)
    except Exception:
        m = {"health_ms": [], "health_slow": [], "health_fail": {"monitor_lost": 1}, "waiting_seen": {}, "control_ms": [],
             "lag_ms": [], "rss_kb": [], "fds": [], "threads": [], "failures": []}
    monitor.join(5)
    control.terminate()
    control.join(5)
    stats.failures.extend(m["failures"][:max(0, 50 - len(stats.failures))])
    server_alive = proc.poll() is None
    stopped = stop_server(proc)
    load_end = loadavg()

    # ---- summary
    hm = m["health_ms"]
    cm = m["control_ms"]
    rss = [kb for _, kb in m["rss_kb"]]
    good = stats.good
    fivexx = sum(n for s in stats.per.values() for o, n in s["outcomes"].items()
                 if isinstance(o, int) and o >= 500 and o != 503)
    good_lost = good["timeout"] + good["conn_error_or_bad_answer"]
    # RSS over the run: the first and the last fifth, to see a trend.
    fifth = max(1, len(rss) // 5)
    rss_first = sum(rss[:fifth]) / fifth / 1024 if rss else None
    rss_last_fifth = sum(rss[-fifth:]) / fifth / 1024 if rss else None
    health_p99 = pct(hm, 99)
    goals = [
        ("no 5xx other than 503", fivexx == 0, "%d" % fivexx),
        ("no good request lost (timeout or dropped)", good_lost == 0,
         "%d timeouts, %d connection errors/bad answers" % (good["timeout"], good["conn_error_or_bad_answer"])),
        ("the server stayed up", not died and server_alive, "exited with %s" % died[0] if died else "up"),
        ("RSS max under %g MB" % args.max_rss_mb, bool(rss) and max(rss) / 1024 < args.max_rss_mb,
         "%.0f MB" % (max(rss) / 1024) if rss else "no samples"),
        ("/health p99 under 100 ms, all polls answered", health_p99 is not None and health_p99 < 100
         and not m["health_fail"], "p99 %.1f ms, %d failed polls" % (health_p99 or -1, sum(m["health_fail"].values()))),
    ]
    passed = all(ok for _, ok, _ in goals) and not stuck

    def hist(c):
        return ", ".join("%s: %d" % (k, v) for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))

    print()
    print("=== soak summary: %.0f s, %d clients, seed %d, server pid %d ===" % (elapsed, args.clients, args.seed, proc.pid))
    print("load average: start %s; end %s" % (load_start, load_end))
    print("%-15s %7s %9s %8s  %s" % ("scenario", "count", "p50 s", "max s", "outcomes"))
    for name in list(WEIGHTS):
        s = stats.per.get(name)
        if not s:
            continue
        lat = s["latencies"]
        print("%-15s %7d %9s %8s  %s" % (name, s["count"], "%.3f" % pct(lat, 50) if lat else "-",
                                         "%.2f" % max(lat) if lat else "-", hist(s["outcomes"])))
    print("good requests: %d answered 200, %d busy (503 or busy event), %d timeouts, %d 5xx, %d lost/bad answers, %d other statuses"
          % (good["ok"], good["busy_503"], good["timeout"], good["5xx"], good["conn_error_or_bad_answer"], good["other_status"]))
    if hm:
        print("/health: %d polls, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d over 100 ms, failed %s"
              % (len(hm), pct(hm, 50), health_p99, max(hm), sum(1 for x in hm if x > 100), m["health_fail"] or 0))
    if m["waiting_seen"]:
        peak = max(int(k.split("_")[1]) for k in m["waiting_seen"])
        print("/health \"waiting\": at most %d seen (--max-waiting %d)%s" % (peak, args.max_waiting,
              "; the queue never filled, so the 503 path was not exercised" if peak < args.max_waiting else ""))
    if cm:
        print("control (a trivial responder in its own process, polled the same way): p50 %.1f ms, p99 %.1f ms, "
              "max %.1f ms, %d over 100 ms; monitor wake-up lag p99 %.1f ms, max %.1f ms"
              % (pct(cm, 50), pct(cm, 99), max(cm), sum(1 for x in cm if x > 100), pct(m["lag_ms"], 99) or 0,
                 max(m["lag_ms"] or [0])))
    if m["health_slow"]:
        worst = sorted(m["health_slow"], key=lambda x: -x[1])[:8]
        print("slowest /health polls (t s, ms, monitor lag ms, previous control ms): %s" % worst)
    if rss:
        print("RSS: min %.0f MB, max %.0f MB, last %.0f MB (first fifth avg %.0f MB, last fifth avg %.0f MB); "
              "fds min/max/last %d/%d/%d; threads max %d"
              % (min(rss) / 1024, max(rss) / 1024, rss[-1] / 1024, rss_first, rss_last_fifth,
                 min(m["fds"]), max(m["fds"]), m["fds"][-1], max(m["threads"])))
    print("server stop: %s" % stopped)
    if stuck:
        print("%d client thread(s) still stuck after the run" % stuck)
    if stats.unexpected:
        print("unexpected answers (not failures):")
        for (scen, variant, outcome), n in sorted(stats.unexpected.items(), key=lambda kv: -kv[1]):
            print("  %s%s: %s x%d" % (scen, " (%s)" % variant if variant else "", outcome, n))
    if stats.failures:
        print("failures, first %d:" % len(stats.failures))
        for f in stats.failures[:25]:
            print("  t=%ss %s: %s" % f)
        print("server log tail:")
        for line in list(log_tail)[-20:]:
            print("  " + line)
    for name, ok, detail in goals:
        print("  [%s] %s: %s" % ("ok" if ok else "FAIL", name, detail))
    print("RESULT: %s" % ("PASS" if passed else "FAIL"))

    if args.json:
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(elapsed, 1), "clients": args.clients,
            "seed": args.seed, "binary": args.binary, "model": args.model,
            "load_start": load_start, "load_end": load_end,
            "scenarios": {n: {"count": s["count"], "outcomes": {str(k): v for k, v in s["outcomes"].items()},
                              "p50_s": pct(s["latencies"], 50), "p99_s": pct(s["latencies"], 99),
                              "max_s": max(s["latencies"]) if s["latencies"] else None}
                          for n, s in stats.per.items()},
            "good": dict(good), "fivexx_not_503": fivexx,
            "health": {"polls": len(hm), "p50_ms": pct(hm, 50), "p99_ms": health_p99, "max_ms": max(hm) if hm else None,
                       "over_100ms": sum(1 for x in hm if x > 100), "failed": m["health_fail"],
                       "waiting_seen": m["waiting_seen"], "slow": m["health_slow"]},
            "control": {"polls": len(cm), "p50_ms": pct(cm, 50), "p99_ms": pct(cm, 99), "max_ms": max(cm) if cm else None,
                        "over_100ms": sum(1 for x in cm if x > 100)},
            "monitor_lag_ms": {"p99": pct(m["lag_ms"], 99), "max": max(m["lag_ms"]) if m["lag_ms"] else None},
            "rss_mb": {"min": min(rss) / 1024 if rss else None, "max": max(rss) / 1024 if rss else None,
                       "last": rss[-1] / 1024 if rss else None, "first_fifth_avg": rss_first,
                       "last_fifth_avg": rss_last_fifth, "limit": args.max_rss_mb},
            "rss_samples": m["rss_kb"],
            "fds": {"min": min(m["fds"]) if m["fds"] else None, "max": max(m["fds"]) if m["fds"] else None,
                    "last": m["fds"][-1] if m["fds"] else None},
            "server_stop": stopped, "stuck_clients": stuck,
            "goals": [{"goal": n, "ok": ok, "detail": d} for n, ok, d in goals],
            "failures": stats.failures, "unexpected": [{"scenario": k[0], "variant": k[1], "outcome": k[2], "count": n}
                                                       for k, n in stats.unexpected.items()],
            "result": "PASS" if passed else "FAIL",
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
