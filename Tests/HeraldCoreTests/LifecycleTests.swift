import Foundation
import Testing

@testable import HeraldCore

@Suite("Lifecycle events: the record, stable IDs, the in-memory store")
struct LifecycleEventCoreTests {
    let node = NodeIdentity(nodeId: "node1", address: "127.0.0.1:7801", slot: 2, epoch: 99, startedAt: 0)

    @Test("an event encodes as one object with sorted keys and without absent fields")
    func encoding() throws {
        let event = LifecycleEvent(.disconnected, systemId: "s", clientId: "c", userId: "u", identity: node, ts: 5, reason: .idleTimeout)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(event.json.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["event", "eventId", "systemId", "clientId", "userId", "node", "slot", "epoch", "ts", "reason"])
        #expect(object["reason"] as? String == "idle_timeout")
        #expect(object["slot"] as? Int == 2 && object["epoch"] as? Int == 99 && object["node"] as? String == "node1")
        #expect(event.json.hasPrefix(#"{"clientId":"c","epoch":99,"event":"disconnected""#))
        let back = try JSONDecoder().decode(LifecycleEvent.self, from: Data(event.json.utf8))
        #expect(back == event)
    }

    @Test("event IDs are the same for the same event and differ between events")
    func stableIds() {
        let a = LifecycleEvent(.connected, systemId: "s", clientId: "c", userId: "", identity: node, ts: 1)
        let again = LifecycleEvent(.connected, systemId: "s", clientId: "c", userId: "", identity: node, ts: 2)
        let other = LifecycleEvent(.disconnected, systemId: "s", clientId: "c", userId: "", identity: node, reason: .clientClosed)
        let bind1 = LifecycleEvent(.bound, systemId: "s", clientId: "c", userId: "", identity: node, groupName: "g", discriminator: "m1")
        let bind2 = LifecycleEvent(.bound, systemId: "s", clientId: "c", userId: "", identity: node, groupName: "g", discriminator: "m2")
        #expect(a.eventId == again.eventId)
        #expect(Set([a.eventId, other.eventId, bind1.eventId, bind2.eventId]).count == 4)
    }

    @Test("the in-memory store keeps the newest events within its count and bytes, per system on reading")
    func boundedStore() async throws {
        let store = InMemoryLifecycle(capacity: 3, capacityBytes: 1 << 20)
        for k in 0..<5 {
            store.record(LifecycleEvent(.connected, systemId: k % 2 == 0 ? "even" : "odd", clientId: "c\(k)", userId: "", identity: node))
        }
        #expect(try await store.recent(systemId: "even", limit: 10).map(\.clientId) == ["c2", "c4"])
        #expect(try await store.recent(systemId: "odd", limit: 10).map(\.clientId) == ["c3"])
        #expect(try await store.recent(systemId: "even", limit: 1).map(\.clientId) == ["c4"])
        let small = InMemoryLifecycle(capacity: 100, capacityBytes: 500)
        for k in 0..<20 { small.record(LifecycleEvent(.connected, systemId: "s", clientId: "c\(k)", userId: "", identity: node)) }
        let kept = try await small.recent(systemId: "s", limit: 100)
        #expect(kept.count < 20 && kept.count > 0)
        #expect(kept.last?.clientId == "c19")
        #expect(kept.reduce(0) { $0 + $1.approximateBytes } <= 500)
    }
}
