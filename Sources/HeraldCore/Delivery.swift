import Synchronization

/// Applies messages that reached this node to its local connections: pushes frames,
/// binds, unbinds and closes, and records what happened for the trace.
public final class Delivery: Sendable {
    private let registry: ConnectionRegistry
    private let membership: any Membership
    private let trace: any TraceRecorder
    private let presence: Bool
    /// Where binds and unbinds are recorded as lifecycle events (nil: not recorded).
    public let lifecycle: (any LifecycleRecorder)?
    /// Presence announcements, published one at a time so members hear them in order.
    private let announcements: AsyncStream<BusMessage>.Continuation
    private let pendingAnnouncements: AsyncStream<BusMessage>
    private let announcing = Mutex(false)
    /// Announcements shed because the queue was full (its oldest go first), and binds refused
    /// because the client was at `FieldLimits.groupsPerClient`: counted, never silent.
    public let shedAnnouncements = Atomic<Int>(0)
    public let refusedBinds = Atomic<Int>(0)

    /// `presence` false: no 1001/1002 frames when members join or leave a group.
    public init(
        registry: ConnectionRegistry, membership: any Membership, trace: any TraceRecorder, presence: Bool = true,
        lifecycle: (any LifecycleRecorder)? = nil
    ) {
        self.registry = registry
        self.membership = membership
        self.trace = trace
        self.presence = presence
        self.lifecycle = lifecycle
        (pendingAnnouncements, announcements) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
    }

    deinit {
        announcements.finish()
    }

    /// Sends presence announcements through `bus` (set once the bus exists: the local bus
    /// itself needs this delivery), so members on every node hear them. Until then they
    /// reach local members only.
    public func announce(through bus: any Bus) {
        guard announcing.withLock({ started in defer { started = true }; return !started }) else { return }
        let stream = pendingAnnouncements
        Task { [weak self] in
            for await message in stream {
                do {
                    _ = try await bus.publish(message)
                } catch {
                    // The fabric is down: members here still hear it; other nodes miss this one.
                    self?.deliver(message)
                }
            }
        }
    }

    /// For a node whose identity never changes (tests, tools).
    public convenience init(registry: ConnectionRegistry, identity: NodeIdentity, trace: any TraceRecorder) {
        self.init(registry: registry, membership: FixedMembership(local: identity), trace: trace)
    }

    /// Read on each message: a node that lost and re-claimed its slot has a new epoch.
    public var identity: NodeIdentity { membership.local }

    /// Hands `message` to its local recipients. `cut` is where the log stands just past it
    /// (push frames carry it as `pos`, for resume); nil where no log position applies.
    public func deliver(_ message: BusMessage, cut: LogCut? = nil) {
        switch message.target {
        case .client(let id, let raw):
            deliverToClient(message, id: id, raw: raw, cut: cut)
        case .group(let name):
            let members = registry.members(of: GroupKey(systemId: message.systemId, name: name))
            if case .presence(let event, let info) = message.body {
                let frame = OutboundFrame(FrameEncoding.presence(event, group: name, info: info, at: message.acceptedAt))
                for sink in members { sink.push(frame) }
            } else {
                fanOut(message, to: members, cut: cut)
            }
        case .system:
            fanOut(message, to: registry.clients(ofSystem: message.systemId), cut: cut)
        }
    }

    /// A bind or unbind that changed the client's groups, as a lifecycle event; the message's
    /// ID tells repeated binds of one group apart (and is the same if the record is read twice).
    private func recordMembership(
        _ kind: LifecycleEvent.Kind, _ message: BusMessage, connection: ConnectionRegistry.Connection, group: String
    ) {
        lifecycle?.record(
            LifecycleEvent(
                kind, systemId: connection.systemId, clientId: connection.clientId, userId: connection.userId, identity: identity,
                groupName: group, discriminator: message.messageId))
    }

    private func deliverToClient(_ message: BusMessage, id: ClientID, raw: String, cut: LogCut?) {
        let identity = self.identity
        // Binds and unbinds travel on their group's broadcast partition, which every node
        // reads: only the owner acts on one; for the others it is not a drop.
        switch message.body {
        case .bind, .unbind:
            guard id.slot == identity.slot, id.epoch == identity.epoch else { return }
        default:
            break
        }
        // A node pushes only what was addressed to the slot and epoch it holds.
        guard id.slot == identity.slot, id.epoch == identity.epoch,
            let connection = registry.connection(serial: id.serial), connection.systemId == message.systemId
        else {
            drop(message, clientId: raw, reason: "offline")
            return
        }
        switch message.body {
        case .push:
            guard let text = message.pushFrame(pos: cut?.encoded) else { return }
            if connection.sink.push(OutboundFrame(text, messageId: message.messageId)) {
                trace.record(message.messageId, TraceStep(.delivered, node: identity.nodeId, clientId: raw))
            } else {
                drop(message, clientId: raw, reason: "slow consumer")
            }
        case .bind(let group, let userId, let extend):
            switch registry.bind(serial: id.serial, group: group, userId: userId, extend: extend) {
            case .bound(let change):
                if change.changed {
                    connection.sink.groupsChanged(at: cut)
                    recordMembership(.bound, message, connection: connection, group: group)
                }
                announce(.joined, change)
            case .tooManyGroups:
                refusedBinds.add(1, ordering: .relaxed)
                drop(message, clientId: raw, reason: "client is in \(FieldLimits.groupsPerClient) groups already")
            case .offline: break
            }
        case .unbind(let group):
            if let change = registry.unbind(serial: id.serial, group: group) {
                if change.changed {
                    connection.sink.groupsChanged(at: cut)
                    recordMembership(.unbound, message, connection: connection, group: group)
                }
                announce(.left, change)
            }
        case .close:
            connection.sink.close(code: 1000, reason: "closed by the business system")
        case .presence:
            break  // presence is addressed to groups, never to one client
        }
    }

    private func fanOut(_ message: BusMessage, to sinks: [any ClientSink], cut: LogCut?) {
        // Encoded once, whatever the number of members.
        guard let text = message.pushFrame(pos: cut?.encoded) else { return }
        let frame = OutboundFrame(text, messageId: message.messageId)
        var delivered = 0
        for sink in sinks where sink.push(frame) {
            delivered += 1
        }
        trace.record(message.messageId, TraceStep(.delivered, node: identity.nodeId, count: delivered))
        if delivered < sinks.count {
            trace.record(
                message.messageId,
                TraceStep(.dropped, node: identity.nodeId, count: sinks.count - delivered, reason: "slow consumer"))
        }
    }

    private func drop(_ message: BusMessage, clientId: String, reason: String) {
        trace.record(message.messageId, TraceStep(.dropped, node: identity.nodeId, clientId: clientId, reason: reason))
    }

    /// Tells a group's members, on every node, that someone joined or left.
    public func announce(_ event: PresenceEvent, _ change: ConnectionRegistry.Change) {
        guard presence, change.changed else { return }
        let message = BusMessage(
            messageId: "", systemId: change.systemId, target: .group(change.group), body: .presence(event, change.info),
            acceptedAt: Clock.nowMillis(), acceptedBy: identity.nodeId)
        guard announcing.withLock({ $0 }) else {
            deliver(message)
            return
        }
        if case .dropped = announcements.yield(message) {
            shedAnnouncements.add(1, ordering: .relaxed)
        }
    }
}

/// The standalone node's bus: every message goes into the journal and straight to delivery.
public final class LocalBus: Bus {
    private let journal: MessageJournal
    private let delivery: Delivery
    private let slot: UInt32

    public init(journal: MessageJournal, delivery: Delivery, slot: UInt32) {
        self.journal = journal
        self.delivery = delivery
        self.slot = slot
    }

    public func publish(_ message: BusMessage) async throws(HeraldError) -> Placement {
        let (topic, partition): (String, Int32)
        switch message.target {
        case .client(let id, _): (topic, partition) = (Topics.unicast, Int32(bitPattern: id.slot))
        case .group, .system: (topic, partition) = (Topics.broadcast, 0)
        }
        let identity = delivery.identity
        let delivery = self.delivery
        return journal.append(
            message, topic: topic, partition: partition, at: Clock.nowMillis(), slot: identity.slot, epoch: identity.epoch
        ) { cut in
            delivery.deliver(message, cut: cut)
        }
    }
}
