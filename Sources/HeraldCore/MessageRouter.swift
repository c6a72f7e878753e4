/// The business API's meaning, independent of HTTP: resolves client IDs, decides what
/// is offline or foreign, and hands messages to the bus.
public struct MessageRouter: Sendable {
    public let codec: ClientIDCodec
    public let membership: any Membership
    public let bus: any Bus
    public let registry: ConnectionRegistry
    public let trace: any TraceRecorder
    public let presence: any PresenceDirectory

    public init(
        codec: ClientIDCodec, membership: any Membership, bus: any Bus, registry: ConnectionRegistry,
        trace: any TraceRecorder, presence: (any PresenceDirectory)? = nil
    ) {
        self.codec = codec
        self.membership = membership
        self.bus = bus
        self.registry = registry
        self.trace = trace
        self.presence = presence ?? LocalPresence(registry: registry, membership: membership)
    }

    private var node: String { membership.local.nodeId }

    /// Decodes a client ID for `systemId`: 4001 if it is not ours, 4030 if it is another
    /// system's, 4040 if its node or connection is gone.
    public func resolve(_ raw: String, systemId: String) throws(HeraldError) -> ClientID {
        let id = try codec.open(raw)
        guard id.belongs(to: systemId) else { throw .foreignClient }
        let local = membership.local
        if id.slot == local.slot, id.epoch == local.epoch, !membership.provesOwnSlot {
            // Another node may hold this slot by now; nothing is sent until etcd says otherwise.
            throw .unavailable("this node cannot renew its lease in etcd, so it cannot prove it still holds the client's slot")
        }
        guard membership.holds(slot: id.slot, epoch: id.epoch) else { throw .clientOffline }
        if id.slot == membership.local.slot, registry.connection(serial: id.serial) == nil {
            throw .clientOffline
        }
        return id
    }

    public func sendToClient(systemId: String, clientId raw: String, payload: PushPayload) async throws(HeraldError) -> String {
        let messageId = accept()
        let id: ClientID
        do {
            id = try resolve(raw, systemId: systemId)
        } catch {
            trace.record(messageId, TraceStep(.dropped, node: node, clientId: raw, reason: "answered \(error.code)"))
            throw error.with(messageId: messageId)
        }
        try await publish(messageId, systemId: systemId, target: .client(id, raw: raw), body: .push(payload))
        return messageId
    }

    public struct BatchResult: Sendable {
        public var messageId: String
        public var failed: [(clientId: String, error: HeraldError)]
    }

    /// Sends one message to many clients; those that cannot be reached are listed, not fatal.
    /// A fabric outage is fatal only if nothing at all could be sent.
    public func sendToClients(systemId: String, clientIds: [String], payload: PushPayload) async throws(HeraldError) -> BatchResult {
        let messageId = accept()
        var failed: [(String, HeraldError)] = []
        var sent = 0
        for raw in clientIds {
            do {
                let id = try resolve(raw, systemId: systemId)
                try await publish(messageId, systemId: systemId, target: .client(id, raw: raw), body: .push(payload))
                sent += 1
            } catch {
                trace.record(messageId, TraceStep(.dropped, node: node, clientId: raw, reason: "answered \(error.code)"))
                failed.append((raw, error))
            }
        }
        // Nothing went out because of the fabric: the whole call fails, "unknown" before "nothing sent".
        if sent == 0, let outage = failed.first(where: { $0.1.code == 5031 }) ?? failed.first(where: { $0.1.code == 5030 }) {
            throw outage.1.with(messageId: messageId)
        }
        return BatchResult(messageId: messageId, failed: failed)
    }

    public func sendToGroup(systemId: String, group: String, payload: PushPayload) async throws(HeraldError) -> String {
        let messageId = accept()
        try await publish(messageId, systemId: systemId, target: .group(group), body: .push(payload))
        return messageId
    }

    public func sendToSystem(systemId: String, payload: PushPayload) async throws(HeraldError) -> String {
        let messageId = accept()
        try await publish(messageId, systemId: systemId, target: .system, body: .push(payload))
        return messageId
    }

    /// Sends a message again, as a redelivery, to its target if that is online now.
    /// Answers whether it was sent.
    public func redeliver(_ original: BusMessage) async throws(HeraldError) -> Bool {
        guard case .push = original.body else { return false }
        if case .client(_, let raw) = original.target {
            guard (try? resolve(raw, systemId: original.systemId)) != nil else { return false }
        }
        var message = original
        message.redelivered = true
        message.acceptedAt = Clock.nowMillis()
        message.acceptedBy = node
        let placement = try await bus.publish(message)
        trace.record(message.messageId, TraceStep(.redelivered, node: node, placement: placement))
        return true
    }

    public func bind(systemId: String, clientId raw: String, group: String, userId: String, extend: String) async throws(HeraldError) {
        try await control(systemId: systemId, raw: raw, body: .bind(group: group, userId: userId, extend: extend))
    }

    public func unbind(systemId: String, clientId raw: String, group: String) async throws(HeraldError) {
        try await control(systemId: systemId, raw: raw, body: .unbind(group: group))
    }

    public func close(systemId: String, clientId raw: String) async throws(HeraldError) {
        try await control(systemId: systemId, raw: raw, body: .close)
    }

    /// Whether a client is online and which groups it is in. An ID that is ours but gone
    /// is simply offline; only a foreign or forged ID is an error.
    public func clientStatus(systemId: String, clientId raw: String) async throws(HeraldError) -> (online: Bool, groups: [String]) {
        let id = try codec.open(raw)
        guard id.belongs(to: systemId) else { throw .foreignClient }
        guard membership.holds(slot: id.slot, epoch: id.epoch) else { return (false, []) }
        return try await presence.status(systemId: systemId, id: id)
    }

    /// The group's members across the fabric, and the nodes that did not answer.
    public func onlineMembers(systemId: String, group: String) async -> (list: [PresenceInfo], unreachable: [String]) {
        await presence.onlineList(systemId: systemId, group: group)
    }

    private func control(systemId: String, raw: String, body: MessageBody) async throws(HeraldError) {
        let id = try resolve(raw, systemId: systemId)
        let placement = try await publish(accept(), systemId: systemId, target: .client(id, raw: raw), body: body)
        switch body {
        case .bind, .unbind:
            // Ordered with the group's later sends by the bus already; waiting for the owner
            // also makes client_status and get_online_list show it once this answers.
            _ = await presence.awaitApplied(by: id, at: placement)
        default:
            break
        }
    }

    private func accept() -> String {
        let now = Clock.nowMillis()
        let messageId = MessageIDs.make(now: now)
        trace.record(messageId, TraceStep(.accepted, node: node, at: now))
        return messageId
    }

    @discardableResult
    private func publish(_ messageId: String, systemId: String, target: MessageTarget, body: MessageBody) async throws(HeraldError)
        -> Placement
    {
        let message = BusMessage(
            messageId: messageId, systemId: systemId, target: target, body: body, acceptedAt: Clock.nowMillis(),
            acceptedBy: node)
        do {
            let placement = try await bus.publish(message)
            trace.record(messageId, TraceStep(.produced, node: node, placement: placement))
            return placement
        } catch {
            let reason =
                switch error.code {
                case 5031: "outcome unknown"
                case 4130: "too large for the fabric"
                default: "fabric unavailable"
                }
            trace.record(messageId, TraceStep(.dropped, node: node, reason: reason))
            throw error.with(messageId: messageId)
        }
    }
}
