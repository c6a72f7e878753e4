/// One replayed message as `/admin/replay` and `herald replay` print it.
public struct ReplayLine: Sendable, Hashable, Encodable {
    public var timestamp: String
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var kind: String
    public var messageId: String
    public var systemId: String
    public var target: String
    public var payload: JSONValue
    public var headers: [String: String]
    /// Milliseconds since the epoch, for ordering; not printed.
    public var millis: Int64

    enum CodingKeys: String, CodingKey {
        case timestamp, topic, partition, offset, kind, messageId, systemId, target, payload, headers
    }

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
        let inspection = WireFormat.inspect(WireFormat.encode(record.message))!
        var headers = [
            "messageId": inspection.messageId, "systemId": inspection.systemId, "kind": inspection.kind.rawValue,
            "acceptedAt": String(inspection.acceptedAt), "acceptedBy": inspection.acceptedBy,
            "target": inspection.target,
        ]
        if inspection.redelivered { headers["redelivered"] = "true" }
        self.init(placement: record.placement, timestamp: record.timestamp, message: inspection, headers: headers)
    }

    public var json: String { FrameEncoding.encode(self) }
}
