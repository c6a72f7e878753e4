import Foundation
import Testing

@testable import HeraldCore

@Suite("Lifecycle bookkeeping: which clients a dead node held, which offsets are done")
struct LifecycleBookkeepingTests {
    let dead = NodeIdentity(nodeId: "node3", address: "a", slot: 2, epoch: 40, startedAt: 0)
    let alive = NodeIdentity(nodeId: "node1", address: "b", slot: 0, epoch: 7, startedAt: 0)

    func event(_ kind: LifecycleEvent.Kind, _ client: String, on node: NodeIdentity? = nil, reason: LifecycleEvent.Reason? = nil)
        -> LifecycleEvent
    {
        LifecycleEvent(kind, systemId: "s", clientId: client, userId: "u-\(client)", identity: node ?? dead, reason: reason)
    }

    @Test("a snapshot plus the node's events since: connected and resumed add, disconnected removes, other nodes' and epochs' events are ignored")
    func heldClients() {
        var held = HeldClients(nodeId: "node3", epoch: 40, snapshot: [.init(clientId: "a", systemId: "s", userId: "u-a"), .init(clientId: "b", systemId: "s", userId: "u-b")])
        var other = dead
        other.epoch = 41
        for e in [
            event(.disconnected, "a", reason: .clientClosed), event(.connected, "c"), event(.bound, "c"), event(.resumed, "d"),
            event(.connected, "x", on: alive), event(.connected, "y", on: other), event(.disconnected, "b", on: alive),
            // Replayed twice (the snapshot's offsets were read before it): the same end.
            event(.connected, "c"), event(.disconnected, "a"),
        ] {
            held.apply(e)
        }
        #expect(held.clients.keys.sorted() == ["b", "c", "d"])
        #expect(held.clients["c"]?.userId == "u-c" && held.clients["c"]?.systemId == "s")
    }

    @Test("the committed offset never passes one that is not done, however they finish")
    func commitProgress() {
        var progress = CommitProgress()
        for offset in Int64(10)..<15 { progress.arrived(partition: 0, offset: offset) }
        progress.arrived(partition: 1, offset: 3)
        #expect(progress.committable().isEmpty, "nothing done")
        progress.finished(partition: 0, offset: 12)
        progress.finished(partition: 0, offset: 11)
        #expect(progress.committable().isEmpty, "10 is not done: nothing past it")
        progress.finished(partition: 0, offset: 10)
        #expect(progress.committable().map { "\($0.partition):\($0.next)" } == ["0:13"])
        #expect(progress.committable().isEmpty, "said once")
        progress.finished(partition: 0, offset: 14)
        progress.finished(partition: 0, offset: 13)
        progress.finished(partition: 1, offset: 3)
        #expect(progress.committable().map { "\($0.partition):\($0.next)" }.sorted() == ["0:15", "1:4"])
        // A finish of an offset never handed out changes nothing.
        progress.finished(partition: 0, offset: 99)
        #expect(progress.committable().isEmpty)
    }

    @Test("a partition that starts over (a rebalance gave it back from the committed offset) is tracked afresh")
    func commitProgressRestart() {
        var progress = CommitProgress()
        for offset in Int64(0)..<5 { progress.arrived(partition: 0, offset: offset) }
        progress.finished(partition: 0, offset: 0)
        #expect(progress.committable().map(\.next) == [1])
        progress.arrived(partition: 0, offset: 1)
        progress.finished(partition: 0, offset: 1)
        // The old in-flight 2..4 are forgotten: their finish changes nothing now.
        progress.finished(partition: 0, offset: 3)
        #expect(progress.committable().map(\.next) == [2])
    }

    @Test("thousands of offsets done in order keep the tracker small")
    func commitProgressBounded() {
        var progress = CommitProgress()
        for offset in Int64(0)..<10_000 {
            progress.arrived(partition: 0, offset: offset)
            progress.finished(partition: 0, offset: offset)
        }
        #expect(progress.committable().map(\.next) == [10_000])
        #expect(progress.trackedOffsets <= 2048)
    }
}
