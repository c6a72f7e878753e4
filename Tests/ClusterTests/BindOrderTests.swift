import Foundation
import HeraldTestSupport
import Testing

/// "Bind, then send to the room" and "kick, then send": once bind_to_group or
/// unbind_from_group answers 0, through any node, every later group send reflects it.
extension ClusterSuite {
    @Suite("Bind order")
    struct BindOrderTests {
        static let rounds = 200

        func node(_ index: Int) -> RemoteHerald { LocalCluster.node(index % 3 + 1) }

        @Test("200 bind-then-send rounds across nodes: every send made after the bind answered reaches the member; status and online list show it")
        func bindThenSend() async throws {
            let system = try await LocalCluster.registerSystem()
            let member = try await system.via(LocalCluster.node(1)).connect()
            let tag = UUID().uuidString.prefix(6)
            let started = ContinuousClock.now
            var statusMisses = 0
            var listMisses = 0
            for round in 0..<Self.rounds {
                let group = "bt-\(tag)-\(round)"
                try await system.via(node(round)).bind(member.clientId, group: group)
                // Asked of yet another node, right away.
                let status = try await system.via(node(round + 2)).ok("client_status", ["clientId": .string(member.clientId)])
                if !(status["groups"]?.array?.contains { $0.string == group } ?? false) { statusMisses += 1 }
                if round % 10 == 0 {
                    let list = try await system.via(node(round + 1)).ok("get_online_list", ["groupName": .string(group)])
                    if !(list["list"]?.array?.contains { $0["clientId"]?.string == member.clientId } ?? false) { listMisses += 1 }
                }
                _ = try await system.via(node(round + 1)).ok(
                    "send_to_group", ["groupName": .string(group), "msg": .string("bt-\(round)")])
            }
            let sent = ContinuousClock.now - started
            var received = Set<String>()
            while received.count < Self.rounds, let frame = try? await member.ws.nextJSON(timeout: .seconds(10)) {
                if let msg = frame["msg"]?.string, msg.hasPrefix("bt-") { received.insert(msg) }
            }
            let missed = (0..<Self.rounds).filter { !received.contains("bt-\($0)") }
            print("cluster: \(Self.rounds) bind-then-send rounds in \(sent): \(missed.count) missed, \(statusMisses) status misses, \(listMisses) list misses")
            #expect(missed.isEmpty, "sends after an answered bind that never arrived: \(missed)")
            #expect(statusMisses == 0, "client_status right after the bind answered must list the group")
            #expect(listMisses == 0, "get_online_list right after the bind answered must list the member")
            try await member.ws.close()
        }

        @Test("200 unbind-then-send rounds across nodes: no send made after the unbind answered reaches the removed member")
        func unbindThenSend() async throws {
            let system = try await LocalCluster.registerSystem()
            let removed = try await system.via(LocalCluster.node(1)).connect()
            let witness = try await system.via(LocalCluster.node(2)).connect()
            let tag = UUID().uuidString.prefix(6)
            var statusLeaks = 0
            for round in 0..<Self.rounds {
                let group = "ut-\(tag)-\(round)"
                try await system.via(node(round)).bind(removed.clientId, group: group)
                try await system.via(node(round + 1)).bind(witness.clientId, group: group)
                _ = try await system.via(node(round + 2)).ok(
                    "unbind_from_group", ["clientId": .string(removed.clientId), "groupName": .string(group)])
                let status = try await system.via(node(round)).ok("client_status", ["clientId": .string(removed.clientId)])
                if status["groups"]?.array?.contains(where: { $0.string == group }) ?? false { statusLeaks += 1 }
                _ = try await system.via(node(round + 1)).ok(
                    "send_to_group", ["groupName": .string(group), "msg": .string("ut-\(round)")])
            }
            // The witness, still a member, gets every send: then they have all been delivered.
            var witnessed = Set<String>()
            while witnessed.count < Self.rounds, let frame = try? await witness.ws.nextJSON(timeout: .seconds(10)) {
                if let msg = frame["msg"]?.string, msg.hasPrefix("ut-") { witnessed.insert(msg) }
            }
            #expect(witnessed.count == Self.rounds, "the witness got \(witnessed.count) of \(Self.rounds)")
            var leaked: [String] = []
            while let frame = try? await removed.ws.nextJSON(timeout: .seconds(2)) {
                if let msg = frame["msg"]?.string, msg.hasPrefix("ut-") { leaked.append(msg) }
            }
            print("cluster: \(Self.rounds) unbind-then-send rounds: \(leaked.count) leaked, \(statusLeaks) status leaks")
            #expect(leaked.isEmpty, "sends after an answered unbind that still reached the removed member: \(leaked)")
            #expect(statusLeaks == 0, "client_status right after the unbind answered must not list the group")
            try await removed.ws.close()
            try await witness.ws.close()
        }
    }
}
