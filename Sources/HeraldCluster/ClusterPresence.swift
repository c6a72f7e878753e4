import AsyncHTTPClient
import Foundation
import HeraldCore
import NIOCore
import NIOFoundationCompat

/// Presence across the cluster: this node answers for its own clients; other live nodes
/// are asked over HTTP (`PeerRoute`, admin token) in parallel, each within the peer
/// timeout. A node that does not answer is named, never waited on.
public struct ClusterPresence: PresenceDirectory {
    let local: LocalPresence
    let membership: ClusterMembership
    let settings: ClusterSettings
    let http: HTTPClient
    /// Whether this node's consumer has delivered the record at a placement.
    let delivered: @Sendable (Placement) -> Bool

    /// Waits up to `timeout` for this node's consumer to pass `placement` (polled: binds are rare).
    public static func awaitDelivered(
        _ placement: Placement, timeout: Duration, delivered: @Sendable (Placement) -> Bool
    ) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !delivered(placement) {
            guard ContinuousClock.now < deadline, !Task.isCancelled else { return false }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return true
    }

    public func awaitApplied(by id: ClientID, at placement: Placement) async -> Bool {
        let me = membership.local
        if id.slot == me.slot, id.epoch == me.epoch {
            return await Self.awaitDelivered(placement, timeout: settings.peerTimeout, delivered: delivered)
        }
        guard let owner = membership.liveNodes.first(where: { $0.slot == id.slot && $0.epoch == id.epoch }) else {
            return false
        }
        let query = PeerAppliedQuery(topic: placement.topic, partition: placement.partition, offset: placement.offset)
        let answer: PeerAppliedAnswer? = try? await ask(owner, .applied, query)
        return answer?.applied ?? false
    }

    struct Envelope<Payload: Decodable>: Decodable {
        var code: Int
        var data: Payload?
    }

    public func onlineList(systemId: String, group: String) async -> (list: [PresenceInfo], unreachable: [String]) {
        let me = membership.local.nodeId
        let peers = membership.liveNodes.filter { $0.nodeId != me }
        var list = await local.onlineList(systemId: systemId, group: group).list
        var unreachable: [String] = []
        let query = PeerOnlineQuery(systemId: systemId, groupName: group)
        await withTaskGroup(of: (String, PeerOnlineAnswer?).self) { tasks in
            for peer in peers {
                tasks.addTask {
                    let answer: PeerOnlineAnswer? = try? await self.ask(peer, .onlineList, query)
                    return (peer.nodeId, answer)
                }
            }
            for await (nodeId, answer) in tasks {
                if let answer { list += answer.list } else { unreachable.append(nodeId) }
            }
        }
        return (list.sorted { $0.clientId < $1.clientId }, unreachable.sorted())
    }

    public func status(systemId: String, id: ClientID) async throws(HeraldError) -> (online: Bool, groups: [String]) {
        let me = membership.local
        if id.slot == me.slot, id.epoch == me.epoch {
            return try await local.status(systemId: systemId, id: id)
        }
        guard let owner = membership.liveNodes.first(where: { $0.slot == id.slot && $0.epoch == id.epoch }) else {
            return (false, [])
        }
        do {
            let query = PeerStatusQuery(systemId: systemId, slot: id.slot, epoch: id.epoch, serial: id.serial)
            let answer: PeerStatusAnswer = try await ask(owner, .clientStatus, query)
            return (answer.online, answer.groups)
        } catch {
            throw .unavailable("node \(owner.nodeId) did not answer: \(error)")
        }
    }

    private func ask<Query: Encodable, Answer: Decodable>(_ node: NodeRecord, _ route: PeerRoute, _ query: Query) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://\(node.address)\(route.path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(settings.internalToken)")
        request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(query)))
        let response = try await http.execute(request, timeout: .nanoseconds(settings.peerTimeout.nanoseconds))
        let body = try await response.body.collect(upTo: 16 << 20)
        let envelope = try JSONDecoder().decode(Envelope<Answer>.self, from: body)
        guard envelope.code == 0, let data = envelope.data else { throw ClusterError.notJoined }
        return data
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
