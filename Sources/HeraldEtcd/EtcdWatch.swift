// Watch over the JSON gateway: POST /v3/watch, answered by one JSON object per line.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat

extension EtcdClient {
    /// Streams events for keys under `prefix` from `startRevision` (inclusive) on; `startRevision` <= 0 means
    /// "from now". The stream ends by throwing when the connection drops (`.unavailable`), when the start
    /// revision was compacted (`.compacted`), or on a server error; the caller re-watches from lastRevision+1.
    /// An idle connection that hits the HTTP client's read timeout is re-opened transparently from the next
    /// revision. Cancelling the consuming task (or dropping the stream) ends the HTTP request promptly.
    public func watchPrefix(_ prefix: String, startRevision: Int64) -> AsyncThrowingStream<EtcdWatchEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: EtcdWatchEvent.self, throwing: (any Error).self, bufferingPolicy: .unbounded)
        let client = self
        let task = Task {
            do {
                try await client.runWatch(prefix: prefix, startRevision: startRevision, continuation: continuation)
                continuation.finish()
            } catch {
                if Task.isCancelled {
                    continuation.finish()
                } else {
                    continuation.finish(throwing: error)
                }
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Runs until cancelled (returns) or the watch fails (throws).
    func runWatch(
        prefix: String, startRevision: Int64, continuation: AsyncThrowingStream<EtcdWatchEvent, any Error>.Continuation
    ) async throws {
        let key = Base64.encode(prefix)
        let rangeEnd = Base64.encode(etcdPrefixRangeEnd(Array(prefix.utf8)))
        var next = startRevision
        while true {
            let request = WireWatchRequest(
                create_request: WireWatchCreateRequest(
                    key: key, range_end: rangeEnd, start_revision: next > 0 ? String(next) : nil))
            let (response, endpoint) = try await openWatch(request)
            var pending = ByteBuffer()
            var created = false
            do {
                for try await chunk in response.body {
                    pending.writeImmutableBuffer(chunk)
                    while let line = Self.nextLine(&pending) {
                        if Self.isBlank(line) { continue }
                        let keepGoing = try Self.handleWatchLine(
                            line, next: &next, created: &created, continuation: continuation)
                        if !keepGoing { return }
                    }
                    if pending.readableBytes > Self.maxWatchLineBytes {
                        throw EtcdError.badResponse("watch line longer than \(Self.maxWatchLineBytes) bytes")
                    }
                    pending.discardReadBytes()
                }
            } catch let error as HTTPClientError where error == .readTimeout && created && !Task.isCancelled {
                // Idle for the client's read timeout: open the watch again from where we are.
                logger.debug("etcd watch idle, re-opening", metadata: ["prefix": "\(prefix)", "next": "\(next)"])
                continue
            } catch {
                if Task.isCancelled { return }
                throw Self.transportError(error, endpoint: endpoint)
            }
            if Task.isCancelled { return }
            if pending.readableBytes > 0, !Self.isBlank(pending) {
                _ = try Self.handleWatchLine(pending, next: &next, created: &created, continuation: continuation)
            }
            throw EtcdError.unavailable("\(endpoint): watch stream closed")
        }
    }

    /// Handles one watch answer; answers false when the consumer has gone.
    static func handleWatchLine(
        _ line: ByteBuffer, next: inout Int64, created: inout Bool,
        continuation: AsyncThrowingStream<EtcdWatchEvent, any Error>.Continuation
    ) throws -> Bool {
        let decoded = try decode(WireStreamLine<WireWatchResponse>.self, from: line)
        if let error = decoded.error { throw streamError(error) }
        guard let result = decoded.result else { return true }
        let revision = result.header?.revision.int64 ?? 0
        if result.canceled == true {
            let compactRevision = result.compact_revision.int64
            if compactRevision > 0 { throw EtcdError.compacted(compactRevision) }
            throw EtcdError.server(status: 200, message: "watch canceled: \(result.cancel_reason ?? "no reason given")")
        }
        if result.created == true {
            created = true
            // "From now" means from the revision after the one the watch was created at.
            if next <= 0, revision > 0 { next = revision + 1 }
        }
        for event in result.events ?? [] {
            guard let kv = event.kv else { continue }
            let kind: EtcdWatchEvent.Kind = event.type == "DELETE" ? .delete : .put
            let watchEvent = EtcdWatchEvent(kind: kind, kv: try kv.decoded(), revision: revision)
            if case .terminated = continuation.yield(watchEvent) { return false }
        }
        if result.events?.isEmpty == false, revision >= next { next = revision + 1 }
        return true
    }

    /// Takes one newline-terminated line off the front of `buffer`, if there is one.
    static func nextLine(_ buffer: inout ByteBuffer) -> ByteBuffer? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        return buffer.readSlice(length: newline - view.startIndex + 1)
    }

    /// Opens the watch on the first endpoint that answers; the deadline covers only the response head.
    func openWatch(_ request: WireWatchRequest) async throws -> (HTTPClientResponse, String) {
        let payload: ByteBuffer
        do {
            payload = try JSONEncoder().encodeAsByteBuffer(request, allocator: ByteBufferAllocator())
        } catch {
            throw EtcdError.badResponse("cannot encode request: \(error)")
        }
        let start = state.preferred
        var lastError = EtcdError.unavailable("no endpoint")
        for attempt in 0..<endpoints.count {
            let index = (start + attempt) % endpoints.count
            let endpoint = endpoints[index]
            var httpRequest = HTTPClientRequest(url: endpoint + "/v3/watch")
            httpRequest.method = .POST
            httpRequest.headers.add(name: "Content-Type", value: "application/json")
            httpRequest.body = .bytes(payload)
            do {
                let response: HTTPClientResponse
                do {
                    response = try await httpClient.execute(
                        httpRequest, deadline: .now() + TimeAmount(requestTimeout), logger: logger)
                } catch {
                    throw Self.transportError(error, endpoint: endpoint)
                }
                let status = Int(response.status.code)
                guard (200..<300).contains(status) else {
                    let body: ByteBuffer
                    do {
                        body = try await Self.withTimeout(requestTimeout) {
                            try await response.body.collect(upTo: Self.maxResponseBytes)
                        }
                    } catch {
                        throw Self.transportError(error, endpoint: endpoint)
                    }
                    throw Self.errorFromBody(status: status, body: body)
                }
                if attempt > 0 { state.prefer(index) }
                return (response, endpoint)
            } catch let error as EtcdError {
                guard case .unavailable = error else { throw error }
                try Task.checkCancellation()
                logger.debug("etcd endpoint unavailable for watch", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                lastError = error
            }
        }
        throw lastError
    }
}
