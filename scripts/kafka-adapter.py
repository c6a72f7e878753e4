#!/usr/bin/env python3
"""Kafka protocol adapter for the dev and CI cluster (python3 stdlib only).

librdkafka < 2.2.0 misreads the tagged fields that Tansu puts into its
ApiVersions v3 response (fixed upstream in librdkafka 2.2.0). This proxy sits in
front of the broker and forwards every Kafka frame, in both directions,
byte-for-byte unchanged -- with one exception: the response to an ApiVersions
(api_key 18) request of version >= 3 is parsed and rebuilt without tagged
fields (neither the per-api-key ones nor the top-level ones). Everything else
in that response (error code, every api key with its min/max version, the
throttle time) is kept exactly. A response it cannot parse completely is
passed through unchanged.

Usage:
    kafka-adapter.py --listen 127.0.0.1:9092 --upstream 127.0.0.1:9093

The broker must advertise the adapter's address (Tansu:
--advertised-listener-url tcp://127.0.0.1:9092) so that clients keep talking
through the adapter after the metadata exchange.

Against Apache Kafka (or librdkafka >= 2.2) none of this is needed.
"""

import argparse
import asyncio
import signal
import struct
import sys

API_VERSIONS = 18
MAX_FRAME = 256 * 1024 * 1024  # refuse absurd sizes rather than allocate them


def parse_hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class ParseError(Exception):
    pass


class Reader:
    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise ParseError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = 0
        value = 0
        while True:
            if shift > 63:
                raise ParseError("uvarint too long")
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def skip_tagged_fields(self):
        """Reads a tagged-field section; returns how many fields it held."""
        count = self.uvarint()
        for _ in range(count):
            self.uvarint()          # tag
            size = self.uvarint()   # size
            self.take(size)
        return count


def uvarint_bytes(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def strip_api_versions_v3(payload):
    """payload: a response frame without its size prefix (header v0 + body).

    Returns (rebuilt payload without tagged fields, api key count, tagged fields
    removed); raises ParseError when the payload is not exactly one complete
    ApiVersions v3+ body (the caller then passes it through unchanged).
    """
    r = Reader(payload)
    correlation_id = r.int32()            # response header v0 (ApiVersions never uses v1)
    error_code = r.int16()
    n_plus_1 = r.uvarint()
    if n_plus_1 == 0:
        raise ParseError("null api_keys array")
    keys = []
    stripped = 0
    for _ in range(n_plus_1 - 1):
        api_key, min_v, max_v = r.int16(), r.int16(), r.int16()
        stripped += r.skip_tagged_fields()
        keys.append((api_key, min_v, max_v))
    throttle = r.int32()
    stripped += r.skip_tagged_fields()
    if r.pos != len(payload):
        raise ParseError(f"{len(payload) - r.pos} trailing bytes")

    out = bytearray(struct.pack(">ih", correlation_id, error_code))
    out += uvarint_bytes(len(keys) + 1)
    for api_key, min_v, max_v in keys:
        out += struct.pack(">hhh", api_key, min_v, max_v)
        out += b"\x00"                      # no tagged fields
    out += struct.pack(">i", throttle)
    out += b"\x00"                          # no tagged fields
    return bytes(out), len(keys), stripped


class Connection:
    counter = 0

    def __init__(self, adapter, client_reader, client_writer):
        Connection.counter += 1
        self.id = Connection.counter
        self.adapter = adapter
        self.client_reader = client_reader
        self.client_writer = client_writer
        # correlation id -> api_version of in-flight ApiVersions requests
        self.pending_api_versions = {}

    def log(self, msg):
        if self.adapter.verbose:
            print(f"kafka-adapter: conn {self.id}: {msg}", flush=True)

    async def run(self):
        host, port = self.adapter.upstream
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except BaseException as e:  # OSError, or cancelled while connecting
            if isinstance(e, OSError):
                self.log(f"upstream {host}:{port} unreachable: {e}")
            self.client_writer.close()
            if isinstance(e, OSError):
                return
            raise
        tasks = [
            asyncio.create_task(self.pump(self.client_reader, up_writer, self.on_request)),
            asyncio.create_task(self.pump(up_reader, self.client_writer, self.on_response)),
        ]
        try:
            # When either direction ends, close both.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (up_writer, self.client_writer):
                try:
                    w.close()
                except Exception:
                    pass

    async def pump(self, reader, writer, transform):
        try:
            while True:
                size_bytes = await reader.readexactly(4)
                size = struct.unpack(">i", size_bytes)[0]
                if size < 0 or size > MAX_FRAME:
                    self.log(f"bad frame size {size}; closing")
                    return
                payload = await reader.readexactly(size)
                payload = transform(payload)
                writer.write(struct.pack(">i", len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    def on_request(self, payload):
        # Request header: api_key int16, api_version int16, correlation_id int32, ...
        if len(payload) >= 8:
            api_key, api_version, correlation_id = struct.unpack(">hhi", payload[:8])
            if api_key == API_VERSIONS:
                self.pending_api_versions[correlation_id] = api_version
        return payload

    def on_response(self, payload):
        if not self.pending_api_versions or len(payload) < 4:
            return payload
        correlation_id = struct.unpack(">i", payload[:4])[0]
        version = self.pending_api_versions.pop(correlation_id, None)
        if version is None or version < 3:
            return payload
        try:
            rebuilt, n_keys, stripped = strip_api_versions_v3(payload)
        except ParseError as e:
            self.log(f"ApiVersions v{version} response not parsed ({e}); passed through")
            return payload
        self.log(f"ApiVersions v{version} response: {n_keys} api keys, "
                 f"{stripped} tagged fields removed")
        return rebuilt


class Adapter:
    def __init__(self, listen, upstream, verbose):
        self.listen = listen
        self.upstream = upstream
        self.verbose = verbose
        self.connections = set()

    async def handle(self, reader, writer):
        conn = Connection(self, reader, writer)
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # shutting down: the connection's sockets are closed by run()
        finally:
            self.connections.discard(task)

    async def serve(self):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        host, port = self.listen
        server = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        up_host, up_port = self.upstream
        print(f"kafka-adapter: listening on {host}:{port}, upstream {up_host}:{up_port} "
              f"(strips tagged fields from ApiVersions v3+ responses)", flush=True)
        await stop.wait()
        server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await server.wait_closed()
        if self.verbose:
            print("kafka-adapter: stopped", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 9092),
                   help="HOST:PORT to accept Kafka clients on (default 127.0.0.1:9092)")
    p.add_argument("--upstream", type=parse_hostport, default=("127.0.0.1", 9093),
                   help="HOST:PORT of the broker (default 127.0.0.1:9093)")
    p.add_argument("--verbose", action="store_true", help="log connections and rewrites")
    args = p.parse_args()
    try:
        asyncio.run(Adapter(args.listen, args.upstream, args.verbose).serve())
    except OSError as e:
        print(f"kafka-adapter: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
