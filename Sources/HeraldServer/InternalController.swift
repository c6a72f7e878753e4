import Foundation
import HeraldCluster
import HeraldCore
import Hummingbird

/// Node-to-node queries (admin token): the local part of an online list, and the status of
/// a local client, for peers answering business calls.
struct InternalController: Sendable {
    let node: HeraldNodeServices

    func register(to router: Router<HeraldRequestContext>) {
        let group = router.group("internal")
        group.post(.init(stringLiteral: PeerRoute.onlineList.rawValue)) { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(PeerOnlineQuery.self, limit: node.configuration.maxBodyBytes)
            let list = node.registry.presence(of: GroupKey(systemId: query.systemId, name: query.groupName))
            return APIAnswer.success(PeerOnlineAnswer(list: list)).response
        }
        // Answers once this node's consumer has applied the record (a bind or unbind another
        // node produced for one of its clients), or after the peer timeout.
        group.post(.init(stringLiteral: PeerRoute.applied.rawValue)) { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(PeerAppliedQuery.self, limit: node.configuration.maxBodyBytes)
            let applied = await node.fabric.awaitApplied(
                query.placement, timeout: .milliseconds(Int64(node.configuration.peerTimeout * 1000)))
            return APIAnswer.success(PeerAppliedAnswer(applied: applied)).response
        }
        group.post(.init(stringLiteral: PeerRoute.clientStatus.rawValue)) { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(PeerStatusQuery.self, limit: node.configuration.maxBodyBytes)
            let id = ClientID(
                address: "", slot: query.slot, epoch: query.epoch, serial: query.serial, systemId: query.systemId)
            let status = try await LocalPresence(registry: node.registry, membership: node.membership)
                .status(systemId: query.systemId, id: id)
            return APIAnswer.success(PeerStatusAnswer(online: status.online, groups: status.groups)).response
        }
    }
}
