#!/usr/bin/env python3
"""Abuse suite for a standalone Herald node: raw TCP, hand-built WebSocket frames.

Each test asserts what the server MUST do (RFC 6455 sections 5 and 7, docs/websocket.md,
docs/api.md, ../shared/API.md and the hardening brief), not what it does today.

Run it through Tests/abuse/run (which bounds the total time and cleans up the nodes), or
directly:

    HERALD_BIN=.build/debug/herald python3 Tests/abuse/test_abuse.py -v [TestClass[.test]]

Environment:
    HERALD_BIN      the herald binary (default .build/debug/herald)
    ABUSE_PIDFILE   file the suite appends the pid of every node it starts to (for cleanup)
    ABUSE_LOGDIR    where the node logs go (default: a fresh temporary directory)

Standard library only. Every test runs under an alarm (per-test timeout) and every socket
operation has its own timeout, so the suite cannot hang. After each test the node is checked:
if it died (crash) or stopped answering /healthz (hang), the test fails with the node's log
tail and the node is restarted for the next test.
"""

import base64
import hashlib
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("HERALD_BIN", ".build/debug/herald")
PIDFILE = os.environ.get("ABUSE_PIDFILE")
LOGDIR = os.environ.get("ABUSE_LOGDIR") or tempfile.mkdtemp(prefix="herald-abuse-")
ADMIN_TOKEN = "abuse-admin-token"
SYSTEM = "abuse"
HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1


class TestTimeout(Exception):
    pass


class ReadTimeout(Exception):
    """No (complete) frame arrived within a read's own timeout."""


class NoAnswer(AssertionError):
    """The server dropped the connection (or said nothing) where an answer was due."""


class Closed(Exception):
    """The TCP connection ended (EOF or reset) while reading a frame."""

    def __init__(self, how, partial=b""):
        super().__init__(how)
        self.how = how
        self.partial = partial


# ---------------------------------------------------------------------------------------
# The node


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Node:
    """One `herald serve --dev` process on a free loopback port."""

    counter = 0

    def __init__(self, extra=()):
        self.extra = list(extra)
        self.proc = None
        self.port = None
        self.log_path = None
        self.start_error = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        last = None
        for _attempt in range(3):
            Node.counter += 1
            self.port = free_port()
            self.log_path = os.path.join(LOGDIR, "node-%02d-%d.log" % (Node.counter, self.port))
            argv = [BIN, "serve", "--dev", "--port", str(self.port), "--host", HOST,
                    "--admin-token", ADMIN_TOKEN] + self.extra
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            if PIDFILE:
                with open(PIDFILE, "a") as f:
                    f.write("%d\n" % self.proc.pid)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    status, _, _, _ = api(self.port, "GET", "/healthz", timeout=1)
                    if status == 200:
                        self.register(SYSTEM)
                        return
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(0.05)
            last = "node %s did not start (exit %s); log tail:\n%s" % (
                " ".join(argv), self.proc.poll(), self.log_tail())
            self.stop()
            if "address already in use" not in last.lower():
                break
        raise RuntimeError(last)

    def register(self, system):
        status, _, _, body = api(self.port, "POST", "/api/register", {"systemId": system})
        if status != 200 and not (status == 409 and body and body.get("code") == 4090):
            raise RuntimeError("register %s answered %s %r" % (system, status, body))

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(6)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def log_tail(self, lines=25):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self, timeout=5):
        try:
            status, _, _, _ = api(self.port, "GET", "/healthz", timeout=timeout)
            return status == 200
        except (OSError, http.client.HTTPException):
            return False


# ---------------------------------------------------------------------------------------
# HTTP


def api(port, method, path, body=None, headers=None, timeout=10):
    """One HTTP request on its own connection: (status, headers dict lowercased, raw body,
    parsed JSON body or None)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        parsed = None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            pass
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw, parsed
    finally:
        conn.close()


def send_api(port, route, body, headers=None, timeout=10):
    hdrs = {"SystemId": SYSTEM}
    hdrs.update(headers or {})
    return api(port, "POST", "/api/" + route, body, hdrs, timeout=timeout)


def admin_get(port, path, timeout=10):
    return api(port, "GET", path, headers={"Authorization": "Bearer " + ADMIN_TOKEN}, timeout=timeout)


def read_http_response(sock, timeout=5.0, buf=b""):
    """Reads one HTTP response from a raw socket: (status, headers {lower: [values]}, body,
    leftover bytes). Raises NoAnswer when the connection ends before a full head."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        chunk = _recv_until(sock, deadline)
        if chunk is None:
            raise NoAnswer("no HTTP answer within %.1fs (got %r)" % (timeout, buf[:200]))
        if chunk == b"":
            raise NoAnswer("connection closed without an HTTP answer (got %r)" % buf[:200])
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if status == 101 or status == 204 or status == 304 or 100 <= status < 200:
        return status, headers, b"", rest
    if "content-length" in headers:
        length = int(headers["content-length"][0])
        while len(rest) < length:
            chunk = _recv_until(sock, deadline)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length], rest[length:]
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                chunk = _recv_until(sock, deadline)
                if not chunk:
                    return status, headers, body, b""
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = _recv_until(sock, deadline)
                if not chunk:
                    return status, headers, body + rest, b""
                rest += chunk
            if size == 0:
                return status, headers, body, rest[2:]
            body += rest[:size]
            rest = rest[size + 2:]
    # No length: the body runs to EOF.
    while True:
        chunk = _recv_until(sock, deadline)
        if not chunk:
            return status, headers, rest, b""
        rest += chunk


def _recv_until(sock, deadline):
    """One recv before the deadline: bytes, b"" at EOF (or reset), None on timeout."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except socket.timeout:
        return None
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return b""


def raw_request(port, data, timeout=5.0):
    """Sends raw request bytes on a new connection and reads one response."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.sendall(data)
        return read_http_response(sock, timeout)
    finally:
        sock.close()


def wait_eof(sock, timeout):
    """Reads (and discards) until the peer closes. Returns the seconds it took, or None if the
    connection was still open at the timeout. A reset counts as closed."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        chunk = _recv_until(sock, deadline)
        if chunk is None:
            return None
        if chunk == b"":
            return time.monotonic() - start


# ---------------------------------------------------------------------------------------
# WebSocket


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def upgrade_request(path="/ws?systemId=" + SYSTEM, method="GET", key=None, version="13",
                    connection="Upgrade", upgrade="websocket", origin=None, host="127.0.0.1",
                    extra=()):
    """An HTTP/1.1 upgrade request; a header given as None is left out."""
    lines = ["%s %s HTTP/1.1" % (method, path)]
    if host is not None:
        lines.append("Host: %s" % host)
    if upgrade is not None:
        lines.append("Upgrade: %s" % upgrade)
    if connection is not None:
        lines.append("Connection: %s" % connection)
    if key is not False:
        lines.append("Sec-WebSocket-Key: %s" % (new_key() if key is None else key))
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    if origin is not None:
        lines.append("Origin: %s" % origin)
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_frame(opcode, payload=b"", mask=True, fin=True, rsv=0, mask_key=None, length=None):
    """One WebSocket frame as bytes. `rsv` is the 3-bit RSV1..3 value (RSV1 = 4)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key or os.urandom(4)
    return head + key + xor_mask(payload, key)


def xor_mask(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, payload, masked):
        self.fin, self.rsv, self.opcode, self.payload, self.masked = fin, rsv, opcode, payload, masked

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def text(self):
        return self.payload.decode("utf-8", "replace")

    def __repr__(self):
        return "Frame(op=%d fin=%s len=%d %r)" % (self.opcode, self.fin, len(self.payload), self.payload[:80])


class WS:
    """A client WebSocket on a raw socket."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = buf
        self.client_id = None
        self.welcome = None

    # -- connect

    @classmethod
    def open(cls, port, request=None, timeout=10.0, rcvbuf=None):
        """Connects and upgrades; answers (ws or None, status, headers, body)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        key = new_key()
        sock.sendall(request or upgrade_request(key=key))
        try:
            status, headers, body, rest = read_http_response(sock, timeout)
        except Exception:
            sock.close()
            raise
        if status != 101:
            sock.close()
            return None, status, headers, body
        if request is None:
            got = headers.get("sec-websocket-accept", [""])[0]
            if got != accept_for(key):
                sock.close()
                raise AssertionError("bad Sec-WebSocket-Accept %r" % got)
        return cls(sock, rest), status, headers, body

    @classmethod
    def client(cls, port, timeout=10.0, rcvbuf=None):
        """An admitted client of SYSTEM: the welcome frame read, clientId kept."""
        ws, status, headers, body = cls.open(port, timeout=timeout, rcvbuf=rcvbuf)
        if ws is None:
            raise AssertionError("upgrade answered %s %r" % (status, body[:200]))
        frame = ws.read_data(timeout)
        welcome = json.loads(frame.payload)
        if welcome.get("code") != 0 or not (welcome.get("data") or {}).get("clientId"):
            ws.close()
            raise AssertionError("not admitted: %r" % welcome)
        ws.welcome = welcome
        ws.client_id = welcome["data"]["clientId"]
        # The session token follows the welcome at once: read it, so that raw frame reads
        # see what the test provokes next.
        session = ws.read_frame(timeout)
        if not (session.opcode == OP_TEXT and session.payload.startswith(b'{"code":1003,')):
            ws.close()
            raise AssertionError("expected the session frame after the welcome, got %r" % (session,))
        return ws

    # -- send

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def send_frame(self, opcode, payload=b"", mask=True, fin=True, rsv=0):
        return self.send_raw(build_frame(opcode, payload, mask=mask, fin=fin, rsv=rsv))

    def send_text(self, text, **kw):
        return self.send_frame(OP_TEXT, text, **kw)

    def send_close(self, code=1000, reason=b""):
        return self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- read

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            chunk = _recv_until(self.sock, deadline)
            if chunk is None:
                raise ReadTimeout("no frame within the timeout (have %d bytes)" % len(self.buf))
            if chunk == b"":
                raise Closed("connection closed", self.buf)
            self.buf += chunk

    def read_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            self._fill(pos + 4, deadline)
            key = self.buf[pos:pos + 4]
            pos += 4
        self._fill(pos + n, deadline)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        if masked:
            payload = xor_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)

    def read_data(self, timeout=5.0):
        """The next text or binary frame (server pings and pongs skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if frame.opcode in (OP_PING, OP_PONG):
                continue
            if frame.opcode == OP_CLOSE:
                raise AssertionError("server closed (code %s %r) while a data frame was awaited"
                                     % (frame.close_code, frame.payload[2:]))
            if frame.opcode == OP_TEXT and frame.payload.startswith(b'{"code":1003,'):
                continue  # the session token (resume), after the welcome and after binds
            return frame

    def read_push(self, timeout=5.0):
        """The next push (a frame with a non-empty messageId): (raw payload, parsed)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_data(max(0.01, deadline - time.monotonic()))
            try:
                obj = json.loads(frame.payload)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("messageId"):
                return frame.payload, obj

    def read_close(self, timeout=5.0, probe=False):
        """Reads until the server's close frame. Raises AssertionError when the connection ends
        without one. With `probe`, the caller sent the text `ping` after the frames that must
        fail the connection: a `pong` proves the server went on as if nothing happened (a
        server that fails the connection sends its close first and no data frame after it)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            except Closed as closed:
                raise AssertionError("connection ended without a close frame (%s; frames before: %r)"
                                     % (closed.how, seen[-3:]))
            except ReadTimeout:
                raise AssertionError("no close frame within %.1fs (frames before: %r)" % (timeout, seen[-3:]))
            if frame.opcode == OP_CLOSE:
                return frame
            seen.append(frame)
            if probe and frame.opcode == OP_TEXT and frame.payload == b"pong":
                raise AssertionError("no close frame: the server answered the probe `ping` sent after "
                                     "the offending frame(s), so it carried on (frames: %r)" % seen[-3:])

    def read_close_code(self, timeout=5.0, echo=True, probe=False):
        frame = self.read_close(timeout, probe=probe)
        if echo:
            self.send_raw(build_frame(OP_CLOSE, frame.payload[:2]))
        return frame.close_code

    def wait_eof(self, timeout):
        return wait_eof(self.sock, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def metric(port, name):
    status, _, raw, _ = api(port, "GET", "/metrics")
    if status != 200:
        raise AssertionError("/metrics answered %s" % status)
    for line in raw.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def connections_gauge_name(port):
    """The gauge of open WebSocket connections: herald_connections, or the first gauge that
    looks like one."""
    status, _, raw, _ = api(port, "GET", "/metrics")
    text = raw.decode()
    gauges = re.findall(r"^# TYPE (\S+) gauge$", text, re.M)
    if "herald_connections" in gauges:
        return "herald_connections"
    for g in gauges:
        if re.search(r"(websocket|ws)_?connections|connections_open|open_connections", g):
            return g
    for g in gauges:
        if "connection" in g:
            return g
    raise AssertionError("no connections gauge in /metrics:\n" + text)


def random_message_id():
    return "%028x" % random.getrandbits(112)


# ---------------------------------------------------------------------------------------
# Test base


def _alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


class NodeTestCase(unittest.TestCase):
    """Starts one node for the class (flags in `node_flags`); each test runs under an alarm
    and is followed by a crash/hang check of the node."""

    node_flags = ()
    test_timeout = 40
    node = None

    @classmethod
    def setUpClass(cls):
        cls.node = Node(cls.node_flags)
        cls.node_error = None
        try:
            cls.node.start()
        except Exception as error:  # reported by every test of the class
            cls.node_error = str(error)

    @classmethod
    def tearDownClass(cls):
        if cls.node:
            cls.node.stop()

    def setUp(self):
        self._closers = []
        if self.node_error:
            raise RuntimeError(self.node_error)
        if not self.node.alive():
            self.restart_node("node was not running before the test")
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(self.test_timeout)

    def tearDown(self):
        signal.alarm(0)
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                pass
        if self.node_error:
            return
        if not self.node.alive():
            code = self.node.proc.poll()
            tail = self.node.log_tail()
            self.restart_node("crash")
            raise AssertionError("NODE CRASHED during %s (exit %s); log tail:\n%s" % (self.id(), code, tail))
        if not self.node.healthy(timeout=5):
            tail = self.node.log_tail()
            self.node.proc.kill()
            self.node.proc.wait(5)
            self.restart_node("hang")
            raise AssertionError("NODE HUNG after %s: /healthz did not answer in 5s; log tail:\n%s" % (self.id(), tail))

    @classmethod
    def restart_node(cls, why):
        cls.node.stop()
        cls.node = Node(cls.node_flags)
        try:
            cls.node.start()
        except Exception as error:
            cls.node_error = "node restart (%s) failed: %s" % (why, error)

    @property
    def port(self):
        return self.node.port

    def track(self, thing):
        """Closes a socket or WS at the end of the test."""
        self._closers.append(thing.close)
        return thing

    def client(self, **kw):
        return self.track(WS.client(self.port, **kw))

    def assertClose(self, ws, expected, timeout=5.0, what="", probe=False):
        code = ws.read_close_code(timeout, probe=probe)
        self.assertEqual(code, expected, "%sexpected close %s, got %s" % (what and what + ": ", expected, code))
        # ...and then the server ends the TCP connection.
        took = ws.wait_eof(5)
        self.assertIsNotNone(took, "%sserver sent close %s but kept the TCP connection open for 5s"
                             % (what and what + ": ", code))

    def assertApiError(self, answer, status, code, what=""):
        got_status, _, raw, body = answer
        self.assertEqual(got_status, status, "%s: HTTP %s %r" % (what, got_status, raw[:300]))
        self.assertIsInstance(body, dict, "%s: body is not JSON: %r" % (what, raw[:300]))
        self.assertEqual(body.get("code"), code, "%s: %r" % (what, body))
        return body

    def push(self, ws, body_extra=None, headers=None):
        body = {"clientId": ws.client_id, "msg": "x"}
        body.update(body_extra or {})
        status, _, raw, parsed = send_api(self.port, "send_to_client", body, headers)
        self.assertEqual(status, 200, "send_to_client: %s %r" % (status, raw[:300]))
        return parsed["data"]["messageId"]


# ---------------------------------------------------------------------------------------
# 1-3, 5, 6 (no origin setting), 9, 12-15: a node with default settings


class ProtocolTests(NodeTestCase):

    def bad_frame_closes(self, frames, expected, what):
        ws = self.client()
        for frame in frames:
            ws.send_raw(frame)
        ws.send_text("ping")  # the probe: must not be answered
        self.assertClose(ws, expected, what=what, probe=True)

    # 1. Invalid UTF-8 in text -> 1007

    def test_01_invalid_utf8_text_closes_1007(self):
        cases = {
            "lone 0xff": b"\xff",
            "continuation byte alone": b"ab\x80cd",
            "overlong '/'": b"\xc0\xaf",
            "UTF-16 surrogate": b"\xed\xa0\x80",
            "above U+10FFFF": b"\xf4\x90\x80\x80",
            "truncated at the end": b"abc\xe2\x82",
        }
        for name, payload in cases.items():
            with self.subTest(name):
                self.bad_frame_closes([build_frame(OP_TEXT, payload)], 1007, name)

    def test_01b_invalid_utf8_in_fragmented_text_closes_1007(self):
        self.bad_frame_closes(
            [build_frame(OP_TEXT, b"ab", fin=False), build_frame(OP_CONT, b"\xff\xfe", fin=True)],
            1007, "fragmented")

    def test_01c_utf8_split_across_fragments_is_valid(self):
        """(RFC 6455 5.6/8.1: a code point may be split across fragments.) 'é' split in two,
        then 'ping' -> 'pong'."""
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b'{"s":"\xc3', fin=False))
        ws.send_raw(build_frame(OP_CONT, b'\xa9"}', fin=True))
        ws.send_text("ping")
        self.assertEqual(ws.read_data(5).payload, b"pong")

    def test_01d_client_that_ignores_close_is_dropped(self):
        """After failing the connection (1007), the server ends TCP even if the client never
        answers the close frame (docs: within 3 s)."""
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b"\xff"))
        ws.send_text("ping")
        code = ws.read_close_code(5, echo=False, probe=True)
        self.assertEqual(code, 1007)
        self.assertIsNotNone(ws.wait_eof(6), "TCP still open 6s after the close frame")

    # 2. Protocol errors -> 1002

    def test_02a_unmasked_client_frame_closes_1002(self):
        self.bad_frame_closes([build_frame(OP_TEXT, b"ping", mask=False)], 1002, "unmasked")

    def test_02b_reserved_bits_close_1002(self):
        for name, rsv in (("RSV1", RSV1), ("RSV2", RSV2), ("RSV3", RSV3)):
            with self.subTest(name):
                self.bad_frame_closes([build_frame(OP_TEXT, b"ping", rsv=rsv)], 1002, name)

    def test_02c_continuation_with_nothing_to_continue_closes_1002(self):
        for fin in (True, False):
            with self.subTest(fin=fin):
                self.bad_frame_closes([build_frame(OP_CONT, b"x", fin=fin)], 1002, "orphan continuation fin=%s" % fin)

    def test_02d_new_data_frame_inside_fragmented_message_closes_1002(self):
        for first, second in ((OP_TEXT, OP_TEXT), (OP_TEXT, OP_BINARY), (OP_BINARY, OP_TEXT)):
            with self.subTest(first=first, second=second):
                self.bad_frame_closes(
                    [build_frame(first, b"ab", fin=False), build_frame(second, b"cd", fin=True)],
                    1002, "opcode %d inside a fragmented %d" % (second, first))

    def test_02e_close_with_one_byte_payload_closes_1002(self):
        self.bad_frame_closes([build_frame(OP_CLOSE, b"\x03")], 1002, "1-byte close")

    def close_code_answered_1002(self, codes):
        for code in codes:
            with self.subTest(code=code):
                ws = self.client()
                ws.send_close(code)
                got = ws.read_close_code(5)
                self.assertNotEqual(got, code, "server echoed the invalid close code %d" % code)
                self.assertEqual(got, 1002, "close %d answered %s" % (code, got))
                self.assertIsNotNone(ws.wait_eof(5), "TCP still open after the close")

    def test_02f_close_with_invalid_code_answers_1002(self):
        self.close_code_answered_1002((999, 1005, 1006, 1015, 5000))

    def test_02f2_close_with_other_invalid_codes_answers_1002(self):
        """(Beyond the brief: the other codes RFC 6455 7.4 and the Autobahn suite (7.9.x) treat
        as invalid on the wire.)"""
        self.close_code_answered_1002((0, 1004, 1016, 1100, 2000, 2999))

    def test_02g_control_frame_abuse_closes_1002(self):
        """(docs/websocket.md: bad opcode, fragmented control frame; RFC 5.5: control payload
        at most 125 bytes.)"""
        cases = {
            "fragmented ping": [build_frame(OP_PING, b"x", fin=False)],
            "ping of 126 bytes": [build_frame(OP_PING, b"x" * 126)],
            "close of 126 bytes": [build_frame(OP_CLOSE, close_payload(1000, b"r" * 124))],
            "reserved opcode 0x3": [build_frame(0x3, b"x")],
            "reserved opcode 0xB": [build_frame(0xB, b"x")],
        }
        for name, frames in cases.items():
            with self.subTest(name):
                self.bad_frame_closes(frames, 1002, name)

    # 3. Close reasons

    def test_03a_close_reason_invalid_utf8_closes_1007(self):
        ws = self.client()
        ws.send_frame(OP_CLOSE, close_payload(1000, b"by\xff\xfe"))
        got = ws.read_close_code(5)
        self.assertNotEqual(got, None, "answered with an empty close")
        self.assertEqual(got, 1007)

    def test_03b_valid_close_is_echoed(self):
        ws = self.client()
        ws.send_close(1000, "bye")
        frame = ws.read_close(5)
        self.assertEqual(frame.close_code, 1000, "answered %r" % frame.payload)
        self.assertIsNotNone(ws.wait_eof(5), "TCP still open after the close handshake")

    def test_03c_valid_close_codes_are_not_protocol_errors(self):
        """(RFC 6455 7.4: 1001, 1003, 1007-1011, 3000-4999 are valid on the wire.)"""
        for code in (1001, 1003, 1011, 3000, 4999):
            with self.subTest(code=code):
                ws = self.client()
                ws.send_close(code, "ok")
                got = ws.read_close_code(5)
                self.assertIn(got, (code, 1000, None), "valid close %d answered %s" % (code, got))
                self.assertIsNotNone(ws.wait_eof(5), "TCP still open after the close")

    # 5. Handshake

    def assertHandshake400(self, request, what):
        status, headers, body, _ = raw_request(self.port, request)
        self.assertNotEqual(status, 101, "%s: upgraded" % what)
        self.assertNotEqual(status, 307, "%s: redirected (307 %s)" % (what, headers.get("location")))
        self.assertEqual(status, 400, "%s: HTTP %s %r" % (what, status, body[:200]))
        try:
            parsed = json.loads(body)
        except ValueError:
            self.fail("%s: body is not JSON: %r" % (what, body[:200]))
        self.assertEqual(parsed.get("code"), 4000, "%s: %r" % (what, parsed))
        self.assertIn("msg", parsed)

    def test_05a_post_ws_with_upgrade_headers_400(self):
        self.assertHandshake400(upgrade_request(method="POST"), "POST /ws")

    def test_05b_upgrade_without_connection_upgrade_400(self):
        self.assertHandshake400(upgrade_request(connection=None), "no Connection header")
        self.assertHandshake400(upgrade_request(connection="keep-alive"), "Connection: keep-alive")

    def test_05c_bad_websocket_key_400(self):
        for name, key in (("not base64", "this is not base64!!"),
                          ("15 bytes", base64.b64encode(os.urandom(15)).decode()),
                          ("17 bytes", base64.b64encode(os.urandom(17)).decode()),
                          ("empty", ""),
                          ("missing", False)):
            with self.subTest(name):
                self.assertHandshake400(upgrade_request(key=key), "Sec-WebSocket-Key " + name)

    def test_05d_websocket_version_8_answers_426(self):
        status, headers, body, _ = raw_request(self.port, upgrade_request(version="8"))
        self.assertEqual(status, 426, "HTTP %s %r" % (status, body[:200]))
        versions = ",".join(headers.get("sec-websocket-version", []))
        self.assertIn("13", [v.strip() for v in versions.split(",")],
                      "426 without Sec-WebSocket-Version: 13 (headers %r)" % headers)

    def test_05e_upgrade_on_other_paths_400(self):
        for path in ("/api/foo", "/other", "/healthz", "/ws/x"):
            with self.subTest(path):
                self.assertHandshake400(upgrade_request(path=path), "upgrade on " + path)

    def test_05f_plain_get_ws_400(self):
        request = b"GET /ws?systemId=abuse HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        self.assertHandshake400(request, "plain GET /ws")

    def late_upgrade(self, path):
        """An upgrade sent as the second request of a kept-alive connection: its answer."""
        sock = self.track(socket.create_connection((HOST, self.port), timeout=5))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, _, rest = read_http_response(sock, 5)
        self.assertEqual(status, 200)
        sock.sendall(upgrade_request(path=path))
        return read_http_response(sock, 5, rest)

    def test_05g_late_upgrade_on_other_path_400_not_redirect(self):
        """The brief's "upgrade on another path -> 400 JSON 4000, never a 307" also when the
        upgrade is not the connection's first request (a 307 would send the client to a path
        that has no WebSocket)."""
        for path in ("/other", "/api/foo"):
            with self.subTest(path):
                status, headers, body, _ = self.late_upgrade(path)
                self.assertNotEqual(status, 307, "redirected to %r" % headers.get("location"))
                self.assertEqual(status, 400, "HTTP %s %r" % (status, body[:200]))
                self.assertEqual(json.loads(body).get("code"), 4000, body[:200])

    def test_05h_late_upgrade_on_ws_is_answered(self):
        """A late upgrade on /ws gets an answer: 101, 400, or the documented 307 to a fresh
        connection (HeraldHTTPChannel.redirectingLateUpgrades); never a silent drop."""
        status, headers, body, _ = self.late_upgrade("/ws?systemId=" + SYSTEM)
        self.assertIn(status, (101, 307, 400), "HTTP %s %r" % (status, body[:200]))
        if status == 307:
            self.assertEqual(headers.get("location"), ["/ws?systemId=" + SYSTEM])

    # 6. Origins without settings

    def test_06a_ws_any_origin_allowed_by_default(self):
        ws, status, _, body = WS.open(self.port, upgrade_request(origin="https://evil.example"))
        if ws:
            self.track(ws)
        self.assertEqual(status, 101, "HTTP %s %r" % (status, body[:200]))

    def test_06b_api_with_origin_refused_by_default(self):
        evil = {"Origin": "https://evil.example"}
        for route, body in (("register", {"systemId": "abuse-origin-x"}),
                            ("get_online_list", {"groupName": "g"}),
                            ("send_to_system", {"msg": "x"})):
            with self.subTest(route):
                status, _, raw, _ = send_api(self.port, route, body, evil)
                self.assertEqual(status, 403, "/api/%s with Origin: HTTP %s %r" % (route, status, raw[:200]))
        # Without Origin, as before.
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"})
        self.assertEqual(status, 200, raw[:200])

    def test_06c_admin_with_origin_refused_by_default(self):
        """(../shared/API.md: an /api or /admin request with a foreign Origin is refused 403.)"""
        status, _, raw, _ = api(self.port, "GET", "/admin/nodes",
                                headers={"Authorization": "Bearer " + ADMIN_TOKEN, "Origin": "https://evil.example"})
        self.assertEqual(status, 403, "HTTP %s %r" % (status, raw[:200]))
        status, _, raw, _ = admin_get(self.port, "/admin/nodes")
        self.assertEqual(status, 200, raw[:200])

    def test_06d_api_own_origin_allowed(self):
        """(../shared/API.md: the node's own origin is always allowed.)"""
        own = {"Origin": "http://127.0.0.1:%d" % self.port}
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"}, own)
        self.assertEqual(status, 200, "own origin: HTTP %s %r" % (status, raw[:200]))

    # 9. Inbound frame rate

    def test_09_inbound_frame_flood_closes_1008(self):
        ws = self.client()
        frame = build_frame(OP_TEXT, b'{"x":1}', mask_key=b"\x11\x22\x33\x44")
        stop = threading.Event()

        def sender():
            ws.sock.settimeout(1)
            for i in range(0, 5000, 50):
                if stop.is_set():
                    return
                try:
                    ws.sock.sendall(frame * 50)
                except OSError:
                    return
            ws.send_text("ping")  # the probe: a pong means all 5000 frames were taken

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        try:
            got = ws.read_close(15, probe=True)
        finally:
            stop.set()
            thread.join(5)
        self.assertEqual(got.close_code, 1008, "flood of 5000 frames closed with %s" % got.close_code)

    def test_09b_normal_rate_is_not_limited(self):
        """20 frames a second for 2 s (well under the ~100/s limit) keep the connection open."""
        ws = self.client()
        for _ in range(40):
            ws.send_text('{"x":1}')
            time.sleep(0.05)
        ws.send_text("ping")
        self.assertEqual(ws.read_data(5).payload, b"pong")

    # 12. Acks

    def trace(self, message_id):
        status, _, raw, body = admin_get(self.port, "/admin/trace/" + message_id)
        if status == 404:
            self.assertEqual(body.get("code"), 4044, raw[:200])
            return []
        self.assertEqual(status, 200, raw[:300])
        return body["data"]["steps"]

    def acked_by(self, message_id):
        return [s.get("clientId") for s in self.trace(message_id) if s.get("step") == "acked"]

    def test_12_forged_acks(self):
        owner = self.client()
        first = self.push(owner)
        _, frame = owner.read_push(5)
        self.assertEqual(frame["messageId"], first)

        forgers = [self.client() for _ in range(20)]
        forged_ids = []
        for f in forgers:
            frames = []
            for _ in range(99):
                mid = random_message_id()
                forged_ids.append(mid)
                frames.append(build_frame(OP_TEXT, json.dumps({"ack": mid})))
            # ...and one ack of a real message that was never pushed to this connection.
            frames.append(build_frame(OP_TEXT, json.dumps({"ack": first})))
            f.send_raw(b"".join(frames))
            time.sleep(0.05)
        # Let the node take them all.
        for f in forgers:
            f.send_text("ping")
        for f in forgers:
            try:
                f.read_data(10)
            except (AssertionError, Closed, ReadTimeout):
                pass  # closed for its rate: fine, the forgery is over either way

        owner.send_text(json.dumps({"ack": first}))
        second = self.push(owner)
        _, frame = owner.read_push(5)
        self.assertEqual(frame["messageId"], second)
        owner.send_text(json.dumps({"ack": second}))
        owner.send_text("ping")
        self.assertEqual(owner.read_data(5).payload, b"pong")

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if owner.client_id in self.acked_by(first) and owner.client_id in self.acked_by(second):
                break
            time.sleep(0.2)
        for mid in (first, second):
            acked = self.acked_by(mid)
            self.assertIn(owner.client_id, acked, "real ack of %s missing after the forgery: %r" % (mid, self.trace(mid)))
            strangers = [c for c in acked if c != owner.client_id]
            self.assertEqual(strangers, [], "acks of %s recorded from connections it was never pushed to" % mid)
        recorded = [mid for mid in random.sample(forged_ids, 60) if self.acked_by(mid)]
        self.assertEqual(recorded, [], "%d of 60 sampled forged message ids have an acked step" % len(recorded))

    # 13. Fidelity

    def test_13a_data_is_carried_verbatim(self):
        ws = self.client()
        data = '{"big": 18446744073709551615, "f": 1.50, "s": "é\\u00e9"}'.encode()
        body = b'{"clientId": "' + ws.client_id.encode() + b'", "data": ' + data + b"}"
        status, _, raw, _ = send_api(self.port, "send_to_client", body)
        self.assertEqual(status, 200, raw[:300])
        payload, parsed = ws.read_push(5)
        self.assertRegex(payload, re.compile(rb'"data"\s*:\s*' + re.escape(data)),
                         "push frame does not carry data verbatim: %r" % payload)
        self.assertEqual(parsed["data"]["big"], 18446744073709551615)

    def test_13b_data_nesting_limit(self):
        ws = self.client()
        for depth, ok in ((64, True), (65, False), (1000, False)):
            with self.subTest(depth=depth):
                data = "[" * depth + "]" * depth
                body = '{"clientId": "%s", "data": %s}' % (ws.client_id, data)
                answer = send_api(self.port, "send_to_client", body)
                if ok:
                    self.assertEqual(answer[0], 200, "depth %d: %s %r" % (depth, answer[0], answer[2][:300]))
                else:
                    parsed = self.assertApiError(answer, 400, 4000, "depth %d" % depth)
                    self.assertIn("data", parsed.get("msg", ""), parsed)

    # 14. Kelvin sign

    def test_14_kelvin_sign_system_id_refused(self):
        for name, body in (("escaped", b'{"systemId":"\\u212AIOSK"}'),
                           ("literal UTF-8", '{"systemId":"\u212aIOSK"}'.encode())):
            with self.subTest(name):
                self.assertApiError(api(self.port, "POST", "/api/register", body), 400, 4000, name)
        status, _, raw, body = api(self.port, "POST", "/api/register", {"systemId": "KIOSK"})
        self.assertTrue(status == 200 or (status == 409 and body.get("code") == 4090), "KIOSK: %s %r" % (status, raw[:200]))

    # 15. Idempotency

    def test_15a_idempotency_key_too_long(self):
        ws = self.client()
        body = {"clientId": ws.client_id, "msg": "x"}
        self.assertApiError(send_api(self.port, "send_to_client", body, {"Idempotency-Key": "k" * 129}),
                            400, 4000, "129-byte key")
        status, _, raw, _ = send_api(self.port, "send_to_client", body, {"Idempotency-Key": "k" * 128})
        self.assertEqual(status, 200, "128-byte key: %s %r" % (status, raw[:200]))

    def test_15b_idempotency_key_reuse(self):
        ws = self.client()
        key = {"Idempotency-Key": "abuse-%d" % random.getrandbits(48)}
        body = {"clientId": ws.client_id, "msg": "x"}
        status, _, raw, first = send_api(self.port, "send_to_client", body, key)
        self.assertEqual(status, 200, raw[:200])
        message_id = first["data"]["messageId"]
        status, _, raw, again = send_api(self.port, "send_to_client", body, key)
        self.assertEqual(status, 200, raw[:200])
        self.assertEqual(again["data"]["messageId"], message_id)
        other = dict(body, msg="y")
        self.assertApiError(send_api(self.port, "send_to_client", other, key), 409, 4091, "other body")
        # Delivered once.
        seen = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                _, push = ws.read_push(max(0.05, deadline - time.monotonic()))
                seen.append(push["messageId"])
            except ReadTimeout:
                break
        self.assertEqual(seen, [message_id], "pushes seen: %r" % seen)


# ---------------------------------------------------------------------------------------
# 4. Fragmented messages against the frame limit


class FrameLimitTests(NodeTestCase):
    node_flags = ("--max-frame-bytes", "1024")

    def test_04a_fragmented_message_over_limit_closes_1009(self):
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b"a" * 500, fin=False))
        ws.send_raw(build_frame(OP_CONT, b"b" * 500, fin=False))
        ws.send_raw(build_frame(OP_CONT, b"c" * 500, fin=True))
        self.assertClose(ws, 1009, what="1500 bytes in 3 fragments")

    def test_04b_single_frame_over_limit_closes_1009(self):
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b"a" * 1025))
        self.assertClose(ws, 1009, what="one 1025-byte frame")

    def test_04c_fragmented_message_under_limit_accepted(self):
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b'{"pad":"' + b"a" * 300, fin=False))
        ws.send_raw(build_frame(OP_CONT, b"b" * 300, fin=False))
        ws.send_raw(build_frame(OP_CONT, b"c" * 300 + b'"}', fin=True))
        ws.send_text("ping")
        self.assertEqual(ws.read_data(5).payload, b"pong")
        # 'ping' itself in three fragments.
        ws.send_raw(build_frame(OP_TEXT, b"pi", fin=False))
        ws.send_raw(build_frame(OP_CONT, b"n", fin=False))
        ws.send_raw(build_frame(OP_CONT, b"g", fin=True))
        self.assertEqual(ws.read_data(5).payload, b"pong")

    def test_04d_control_frame_between_fragments_allowed(self):
        """(RFC 6455 5.4: control frames may be injected in the middle of a fragmented message.)"""
        ws = self.client()
        ws.send_raw(build_frame(OP_TEXT, b"pi", fin=False))
        ws.send_raw(build_frame(OP_PING, b"hello"))
        deadline = time.monotonic() + 5
        while True:
            frame = ws.read_frame(max(0.01, deadline - time.monotonic()))
            self.assertNotEqual(frame.opcode, OP_CLOSE, "closed %s" % frame.close_code)
            if frame.opcode == OP_PONG:
                break
        self.assertEqual(frame.payload, b"hello")
        ws.send_raw(build_frame(OP_CONT, b"ng", fin=True))
        self.assertEqual(ws.read_data(5).payload, b"pong")


# ---------------------------------------------------------------------------------------
# 6. Origin settings


class OriginTests(NodeTestCase):
    node_flags = ("--allowed-origins", "https://good.example",
                  "--api-allowed-origins", "https://api-good.example")

    def test_06e_ws_foreign_origin_403(self):
        status, _, body, _ = raw_request(self.port, upgrade_request(origin="https://evil.example"))
        self.assertEqual(status, 403, "HTTP %s %r" % (status, body[:200]))

    def test_06f_ws_allowed_origin_101(self):
        ws, status, _, body = WS.open(self.port, upgrade_request(origin="https://good.example"))
        if ws:
            self.track(ws)
        self.assertEqual(status, 101, "HTTP %s %r" % (status, body[:200]))

    def test_06g_api_allowed_origin_works_foreign_refused(self):
        good = {"Origin": "https://api-good.example"}
        evil = {"Origin": "https://evil.example"}
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"}, good)
        self.assertEqual(status, 200, "allowed API origin: %s %r" % (status, raw[:200]))
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"}, evil)
        self.assertEqual(status, 403, "foreign API origin: %s %r" % (status, raw[:200]))
        # The WebSocket's allowed origin is not an API origin.
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"},
                                     {"Origin": "https://good.example"})
        self.assertEqual(status, 403, "WS origin used on the API: %s %r" % (status, raw[:200]))
        status, _, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"})
        self.assertEqual(status, 200, "no origin: %s %r" % (status, raw[:200]))

    def test_06h_allowed_api_origin_gets_cors(self):
        good = "https://api-good.example"
        status, headers, raw, _ = api(self.port, "OPTIONS", "/api/send_to_client",
                                      headers={"Origin": good, "Access-Control-Request-Method": "POST"})
        self.assertEqual(status, 204, "preflight from an allowed origin: %s %r" % (status, raw[:200]))
        self.assertEqual(headers.get("access-control-allow-origin"), good)
        self.assertIn("Idempotency-Key", headers.get("access-control-allow-headers", ""))
        status, headers, raw, _ = send_api(self.port, "get_online_list", {"groupName": "g"}, {"Origin": good})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("access-control-allow-origin"), good, "the answer is readable by that page")
        status, headers, _, _ = api(self.port, "OPTIONS", "/api/send_to_client", headers={"Origin": "https://evil.example"})
        self.assertEqual(status, 403)
        self.assertIsNone(headers.get("access-control-allow-origin"))


# ---------------------------------------------------------------------------------------
# 7. Ghost connections


class GhostTests(NodeTestCase):

    def test_07_ghost_upgrades_leave_no_connection(self):
        gauge = connections_gauge_name(self.port)
        baseline = metric(self.port, gauge)
        self.assertIsNotNone(baseline)
        half_open = []
        for i in range(300):
            sock = socket.create_connection((HOST, self.port), timeout=5)
            sock.sendall(upgrade_request())
            kind = i % 3
            if kind == 0:
                sock.shutdown(socket.SHUT_WR)  # kept open for reading until the check
                half_open.append(sock)
                self._closers.append(sock.close)
            elif kind == 1:
                sock.close()
            else:  # reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        time.sleep(1)
        deadline = time.monotonic() + 5
        value = metric(self.port, gauge)
        while value != baseline and time.monotonic() < deadline:
            time.sleep(0.2)
            value = metric(self.port, gauge)
        self.assertEqual(value, baseline, "%s is %s 6s after 300 ghost upgrades (baseline %s)" % (gauge, value, baseline))
        time.sleep(1)
        self.assertEqual(metric(self.port, gauge), baseline, "%s moved off its baseline again" % gauge)
        status, _, raw, body = admin_get(self.port, "/admin/nodes")
        self.assertEqual(status, 200, raw[:200])
        self.assertEqual(body["data"][0].get("connections"), baseline,
                         "/admin/nodes counts %r connections" % body["data"][0].get("connections"))
        # The half-open ghosts were let go by the server too.
        still_open = [s for s in half_open if wait_eof(s, 0.05) is None]
        self.assertEqual(len(still_open), 0, "%d of %d half-closed ghosts still open" % (len(still_open), len(half_open)))
        # The node still admits clients.
        ws = self.client()
        deadline = time.monotonic() + 3
        while metric(self.port, gauge) != baseline + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(metric(self.port, gauge), baseline + 1, "a real client is not counted")
        ws.send_text("ping")
        self.assertEqual(ws.read_data(5).payload, b"pong")


# ---------------------------------------------------------------------------------------
# 8. Ping flood


class PingFloodTests(NodeTestCase):
    test_timeout = 90
    FRAMES = 20000
    LATENCY_LIMIT = 1.0
    RSS_LIMIT_KB = 50 * 1024

    def test_08_ping_flood_does_not_hurt_others(self):
        good = self.client()
        flooder = self.client(rcvbuf=4096)  # it never reads: pongs back up at once
        time.sleep(0.3)
        base_rss = self.node.rss_kb()
        self.assertIsNotNone(base_rss)
        peak = [base_rss]
        stop = threading.Event()
        sent = [0]

        def sample():
            while not stop.is_set():
                rss = self.node.rss_kb()
                if rss:
                    peak[0] = max(peak[0], rss)
                time.sleep(0.05)

        blob = build_frame(OP_PING, b"p" * 125, mask_key=b"\x5a\xa5\x3c\xc3") * self.FRAMES
        view = memoryview(blob)

        def flood():
            flooder.sock.settimeout(0.5)
            deadline = time.monotonic() + 30
            while sent[0] < len(blob) and not stop.is_set() and time.monotonic() < deadline:
                try:
                    sent[0] += flooder.sock.send(view[sent[0]:sent[0] + 65536])
                except socket.timeout:
                    continue
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        flooder_thread = threading.Thread(target=flood, daemon=True)
        sampler.start()
        flooder_thread.start()
        latencies = []
        try:
            for _ in range(4):
                time.sleep(0.5)
                started = time.monotonic()
                message_id = self.push(good)
                _, frame = good.read_push(5)
                latencies.append(time.monotonic() - started)
                self.assertEqual(frame["messageId"], message_id)
            flooder_thread.join(35)
            time.sleep(1)  # the node catches up with what it read
            rss_end = self.node.rss_kb()
            if rss_end:
                peak[0] = max(peak[0], rss_end)
            self.assertTrue(self.node.healthy(5), "/healthz did not answer after the flood")
            # One more push after the flood.
            started = time.monotonic()
            self.push(good)
            good.read_push(5)
            latencies.append(time.monotonic() - started)
        finally:
            stop.set()
            sampler.join(2)
        growth = peak[0] - base_rss
        sys.stderr.write("\n    [ping flood] sent %d of %d bytes; push latencies %s s; RSS %d kB -> peak %d kB (+%d kB) "
                         % (sent[0], len(blob), ", ".join("%.3f" % l for l in latencies), base_rss, peak[0], growth))
        self.assertLess(max(latencies), self.LATENCY_LIMIT, "push latencies during the flood: %r" % latencies)
        self.assertLess(growth, self.RSS_LIMIT_KB, "RSS grew by %d kB during the ping flood" % growth)


# ---------------------------------------------------------------------------------------
# 10. Slowloris


class SlowlorisTests(NodeTestCase):
    node_flags = ("--header-timeout", "2", "--keepalive-timeout", "2")
    LIMIT = 2 + 2

    def test_10a_partial_heads_are_closed(self):
        socks = []
        for _ in range(50):
            s = socket.create_connection((HOST, self.port), timeout=5)
            self._closers.append(s.close)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        started = time.monotonic()
        open_socks = set(socks)
        health_failures = []
        next_probe = started
        while open_socks and time.monotonic() - started < self.LIMIT + 0.5:
            readable, _, _ = select.select(list(open_socks), [], [], 0.1)
            for s in readable:
                if _recv_until(s, time.monotonic() + 0.05) == b"":
                    open_socks.discard(s)
            if time.monotonic() >= next_probe:
                next_probe += 0.5
                t0 = time.monotonic()
                if not self.node.healthy(2):
                    health_failures.append(round(t0 - started, 2))
        elapsed = time.monotonic() - started
        self.assertEqual(health_failures, [], "/healthz failed at %r s while the slowloris held its sockets" % health_failures)
        self.assertEqual(len(open_socks), 0, "%d of 50 partial heads still open %.1fs later (limit %ds)"
                         % (len(open_socks), elapsed, self.LIMIT))

    def test_10b_trickled_head_is_closed(self):
        """(A header timeout bounds the whole head, not the gap between bytes.)"""
        socks = [self.track(socket.create_connection((HOST, self.port), timeout=5)) for _ in range(5)]
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        started = time.monotonic()
        closed_at = {}
        i = 0
        while len(closed_at) < len(socks) and time.monotonic() - started < self.LIMIT + 1:
            for s in socks:
                if s in closed_at:
                    continue
                try:
                    s.send(head[i:i + 1])
                except OSError:
                    closed_at[s] = time.monotonic() - started
                    continue
                if wait_eof(s, 0.01) is not None:
                    closed_at[s] = time.monotonic() - started
            i = min(i + 1, len(head) - 1)
            time.sleep(0.3)
        self.assertEqual(len(closed_at), len(socks), "%d of %d trickling heads still open after %ds"
                         % (len(socks) - len(closed_at), len(socks), self.LIMIT + 1))

    def test_10c_idle_keepalive_connection_is_closed(self):
        sock = self.track(socket.create_connection((HOST, self.port), timeout=5))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _, rest = read_http_response(sock, 5)
        self.assertEqual(status, 200)
        took = wait_eof(sock, self.LIMIT + 1)
        self.assertIsNotNone(took, "idle kept-alive connection still open after %ds" % (self.LIMIT + 1))

    def test_10d_websocket_not_cut_by_http_timeouts(self):
        """(A WebSocket is governed by --idle-timeout, not the HTTP header/keep-alive timeouts.)"""
        ws = self.client()
        time.sleep(self.LIMIT + 1)
        ws.send_text("ping")
        self.assertEqual(ws.read_data(5).payload, b"pong")


# ---------------------------------------------------------------------------------------
# 11. Connection cap


class ConnectionCapTests(NodeTestCase):
    node_flags = ("--max-connections", "50")

    def test_11_connections_beyond_cap_get_503(self):
        idle = []
        for _ in range(60):
            s = socket.create_connection((HOST, self.port), timeout=5)
            self._closers.append(s.close)
            idle.append(s)
        time.sleep(0.5)
        sock = self.track(socket.create_connection((HOST, self.port), timeout=5))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, _ = read_http_response(sock, 5)
        self.assertEqual(status, 503, "over the cap /healthz answered %s %r" % (status, body[:200]))
        try:
            json.loads(body)
        except ValueError:
            self.fail("503 body is not JSON: %r" % body[:200])
        self.assertIsNotNone(wait_eof(sock, 5), "connection over the cap not closed after its 503")
        # The idle ones beyond the cap were refused the same way (answered 503, or closed).
        readable = set()
        deadline = time.monotonic() + 3
        while len(readable) < 10 and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in idle if s not in readable], [], [], 0.2)
            readable.update(ready)
        refused = 0
        for s in readable:
            try:
                st, _, b, _ = read_http_response(s, 1)
                self.assertEqual(st, 503, "idle connection got %s %r" % (st, b[:200]))
            except NoAnswer:
                pass  # closed without an answer: refused too
            refused += 1
        self.assertGreaterEqual(refused, 10, "only %d of the 60 idle connections were refused (cap 50)" % refused)
        for s in idle:
            s.close()
        deadline = time.monotonic() + 5
        status = None
        while time.monotonic() < deadline:
            try:
                status = api(self.port, "GET", "/healthz", timeout=2)[0]
            except (OSError, http.client.HTTPException):
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        self.assertEqual(status, 200, "/healthz after the idle connections closed: %s" % status)


class PerAddressCapTests(NodeTestCase):
    node_flags = ("--max-connections-per-ip", "5")

    def test_11b_connections_per_address_beyond_cap_get_429(self):
        held = []
        for _ in range(5):
            s = self.track(socket.create_connection((HOST, self.port), timeout=5))
            held.append(s)
        time.sleep(0.3)
        sock = self.track(socket.create_connection((HOST, self.port), timeout=5))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = read_http_response(sock, 5)
        self.assertEqual(status, 429, "the 6th connection from one address answered %s %r" % (status, body[:200]))
        self.assertEqual(json.loads(body)["code"], 4290)
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = api(self.port, "GET", "/healthz", timeout=2)[0]
            except (OSError, http.client.HTTPException):
                status = None
            time.sleep(0.1)
        self.assertEqual(status, 200, "the address may connect again once its connections closed")


class TrustedProxyCapTests(NodeTestCase):
    node_flags = ("--max-connections-per-ip", "3", "--trusted-proxies", "127.0.0.1")

    def upgrade_as(self, client, spoofed=None):
        sock = self.track(socket.create_connection((HOST, self.port), timeout=5))
        chain = client if spoofed is None else "%s, %s" % (spoofed, client)
        sock.sendall(upgrade_request(extra=("X-Forwarded-For: %s" % chain,)))
        status, _, _, _ = read_http_response(sock, 5)
        return status, sock

    def test_11c_behind_a_trusted_proxy_upgrades_count_per_forwarded_client(self):
        for _ in range(3):
            status, _ = self.upgrade_as("10.1.1.1")
            self.assertEqual(status, 101)
        status, _ = self.upgrade_as("10.1.1.1")
        self.assertEqual(status, 429, "a 4th WebSocket for one forwarded client must be refused")
        # Another client behind the same proxy is not affected, whatever it puts in front.
        status, _ = self.upgrade_as("10.2.2.2", spoofed="10.1.1.1")
        self.assertEqual(status, 101, "the proxy's own entry names the client, not what the client claimed")


class CarelessCallerTests(NodeTestCase):
    """What a careless business system or operator trips over: every one a clear answer."""

    def expect_field_error(self, route, body, field):
        status, _, raw, parsed = send_api(self.port, route, body)
        self.assertEqual(status, 400, "%s %s: %s %r" % (route, field, status, raw[:200]))
        self.assertEqual((parsed or {}).get("code"), 4000)
        self.assertIn(field, (parsed or {}).get("msg", ""), "the message names %s: %r" % (field, raw[:200]))

    def test_16a_field_limits_answer_4000_naming_the_field(self):
        ws = self.track(WS.client(self.port))
        self.expect_field_error("send_to_clients", {"clientIds": ["x"] * 1001}, "clientIds")
        self.expect_field_error("send_to_group", {"groupName": "g" * 257}, "groupName")
        self.expect_field_error("bind_to_group", {"clientId": ws.client_id, "groupName": "g", "extend": "e" * 4097}, "extend")
        self.expect_field_error("bind_to_group", {"clientId": ws.client_id, "groupName": "g", "userId": "u" * 257}, "userId")
        self.expect_field_error("send_to_client", {"clientId": "c" * 1025}, "clientId")
        # At the limits they are taken.
        status, _, raw, _ = send_api(self.port, "bind_to_group",
                                     {"clientId": ws.client_id, "groupName": "g" * 256, "extend": "e" * 4096})
        self.assertEqual(status, 200, raw[:200])

    def test_16b_wrong_types_are_named(self):
        self.expect_field_error("send_to_system", {"code": 1.5}, "code")
        self.expect_field_error("send_to_system", {"code": 18446744073709551615}, "code")
        self.expect_field_error("send_to_system", {"msg": 3}, "msg")
        self.expect_field_error("send_to_clients", {"clientIds": "x"}, "clientIds")
        self.expect_field_error("send_to_clients", {"clientIds": ["a", 2]}, "clientIds[1]")
        status, _, raw, parsed = send_api(self.port, "send_to_system", "{\"data\": [1,}")
        self.assertEqual(status, 400)
        self.assertIn("at byte", parsed.get("msg", ""), "a syntax error says where: %r" % raw[:200])
        # 1e400 is valid JSON: carried as sent, not "malformed".
        status, _, raw, _ = send_api(self.port, "send_to_system", {"data": 1})
        self.assertEqual(status, 200)
        status, _, raw, _ = send_api(self.port, "send_to_system", '{"data": 1e400}')
        self.assertEqual(status, 200, raw[:200])

    def test_16c_wrong_method_is_405_with_allow(self):
        status, headers, raw, parsed = api(self.port, "DELETE", "/metrics")
        self.assertEqual(status, 405, raw[:200])
        self.assertEqual(headers.get("allow"), "GET")
        self.assertEqual(parsed.get("code"), 4050)
        status, headers, _, _ = api(self.port, "GET", "/api/send_to_client")
        self.assertEqual((status, headers.get("allow")), (405, "POST"))
        status, headers, _, _ = api(self.port, "POST", "/healthz")
        self.assertEqual(status, 405)
        self.assertEqual(sorted(headers.get("allow", "").split(", ")), ["GET", "HEAD"])

    def test_16d_bad_settings_and_a_busy_port_name_the_problem(self):
        out = subprocess.run([BIN, "serve", "--dev", "--ping-interval", "-1"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 2)
        self.assertIn("ping-interval", out.stderr)
        self.assertIn("must be positive", out.stderr)
        self.assertNotIn("Missing value", out.stderr)
        out = subprocess.run([BIN, "serve", "--dev", "--host", HOST, "--port", str(self.port)],
                             capture_output=True, text=True, timeout=20)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("port %d" % self.port, out.stderr)
        self.assertIn("in use", out.stderr)

    def test_16e_replay_from_a_node_as_a_table(self):
        status, _, raw, parsed = send_api(self.port, "send_to_system", {"msg": "tabled", "data": {"n": 18446744073709551615}})
        self.assertEqual(status, 200, raw[:200])
        message_id = parsed["data"]["messageId"]
        out = subprocess.run([BIN, "replay", "--node", "http://%s:%d" % (HOST, self.port), "--admin-token", ADMIN_TOKEN,
                              "--format", "table", "--system", SYSTEM], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.strip().splitlines()
        self.assertTrue(lines[0].startswith("TIMESTAMP"), "a header row: %r" % lines[:2])
        self.assertTrue(any(message_id in line and SYSTEM in line for line in lines[1:]), out.stdout[-500:])
        self.assertFalse(any(line.startswith("{") for line in lines), "not JSON lines")


class SummaryResult(unittest.TextTestResult):
    """Keeps one outcome per test (a failing subtest fails its test) for the closing summary."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.outcomes = {}

    def _note(self, test, outcome):
        key = test.id().replace("__main__.", "")
        if self.outcomes.get(key) not in ("FAIL", "ERROR"):
            self.outcomes[key] = outcome

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "FAIL")

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "ERROR")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skip")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._note(test, "FAIL" if issubclass(err[0], test.failureException) else "ERROR")


if __name__ == "__main__":
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        sys.exit("no herald binary at %s (set HERALD_BIN)" % BIN)
    sys.stderr.write("herald binary: %s\nnode logs: %s\n" % (BIN, LOGDIR))
    runner = unittest.TextTestRunner(verbosity=2, resultclass=SummaryResult)
    program = unittest.main(verbosity=2, testRunner=runner, exit=False)
    result = program.result
    sys.stderr.write("\nSummary:\n")
    for key in sorted(result.outcomes):
        sys.stderr.write("  %-5s %s\n" % (result.outcomes[key], key))
    passed = sum(1 for v in result.outcomes.values() if v == "pass")
    sys.stderr.write("%d of %d tests passed\n" % (passed, len(result.outcomes)))
    sys.exit(0 if result.wasSuccessful() else 1)
