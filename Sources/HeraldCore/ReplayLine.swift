/// One replayed message as `/admin/replay` and `herald replay` print it.
public struct ReplayLine: Sendable, Hashable {
    public var timestamp: String
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var kind: String
    public var messageId: String
    public var systemId: String
    public var target: String
    public var payload: RawJSON
    public var headers: [String: String]
    /// Milliseconds since the epoch, for ordering; not printed.
    public var millis: Int64

    public init(placement: Placement, timestamp: Int64, message: WireFormat.Inspection, headers: [String: String]) {
        self.timestamp = TimeExpression.format(timestamp)
        self.millis = timestamp
        topic = placement.topic
        partition = placement.partition
        offset = placement.offset
        kind = message.kind.rawValue
        messageId = message.messageId
        systemId = message.systemId
        target = message.target
        payload = message.payload
        self.headers = headers
    }

    /// A journal record (standalone) as a line, the same shape Kafka's records give.
    public init(_ record: JournalRecord) {
        let inspection = WireFormat.inspection(of: record.message)
        var headers = [
            "messageId": inspection.messageId, "systemId": inspection.systemId, "kind": inspection.kind.rawValue,
            "acceptedAt": String(inspection.acceptedAt), "acceptedBy": inspection.acceptedBy,
            "target": inspection.target,
        ]
        if inspection.redelivered { headers["redelivered"] = "true" }
        self.init(placement: record.placement, timestamp: record.timestamp, message: inspection, headers: headers)
    }

    /// One NDJSON line, keys sorted; the payload's `data` as it was sent.
    public var json: String {
        JSONWriter.object(capacity: payload.text.utf8.count + 320) { w in
            w.key("headers")
            w.beginObject()
            for (name, value) in headers.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
                w.member(name, value)
            }
            w.endObject()
            w.member("kind", kind)
            w.member("messageId", messageId)
            w.member("offset", offset)
            w.member("partition", partition)
            w.member("payload", payload)
            w.member("systemId", systemId)
            w.member("target", target)
            w.member("timestamp", timestamp)
            w.member("topic", topic)
        }
    }
}
