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
        group.post("client_status") { request, _ in
            try AdminController.authorize(request, node: node)
            let query = try await request.decodeJSON(ClusterPresence.StatusQuery.self, limit: node.configuration.maxBodyBytes)
            let local = node.membership.local
            guard query.slot == local.slot, query.epoch == local.epoch,
                let connection = node.registry.connection(serial: query.serial), connection.systemId == query.systemId
            else {
                return APIAnswer.success(ClientStatus(online: false, groups: [])).response
            }
            return APIAnswer.success(ClientStatus(online: true, groups: connection.groups.sorted())).response
        }
    }
}
