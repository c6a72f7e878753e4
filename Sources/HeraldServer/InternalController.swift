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
        group.post("online_list") { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(ClusterPresence.OnlineQuery.self, limit: node.configuration.maxBodyBytes)
            let list = node.registry.presence(of: GroupKey(systemId: query.systemId, name: query.groupName))
            return APIAnswer.success(["list": list]).response
        }
        // Answers once this node's consumer has applied the record (a bind or unbind another
        // node produced for one of its clients), or after the peer timeout.
        group.post("applied") { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(ClusterPresence.AppliedQuery.self, limit: node.configuration.maxBodyBytes)
            guard let cluster = node.cluster else { return APIAnswer.success(ClusterPresence.AppliedAnswer(applied: true)).response }
            let placement = Placement(topic: query.topic, partition: query.partition, offset: query.offset)
            let applied = await ClusterPresence.awaitDelivered(
                placement, timeout: .milliseconds(Int64(node.configuration.peerTimeout * 1000)),
                delivered: { cluster.hasDelivered($0) })
            return APIAnswer.success(ClusterPresence.AppliedAnswer(applied: applied)).response
        }
        group.post("client_status") { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(ClusterPresence.StatusQuery.self, limit: node.configuration.maxBodyBytes)
            let id = ClientID(
                address: "", slot: query.slot, epoch: query.epoch, serial: query.serial, systemId: query.systemId)
            let status = try await LocalPresence(registry: node.registry, membership: node.membership)
                .status(systemId: query.systemId, id: id)
            return APIAnswer.success(ClientStatus(online: status.online, groups: status.groups)).response
        }
    }
}
