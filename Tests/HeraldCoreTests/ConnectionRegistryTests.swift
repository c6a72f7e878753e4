import Testing

@testable import HeraldCore

@Suite("ConnectionRegistry")
struct ConnectionRegistryTests {
    let registry = ConnectionRegistry()

    @discardableResult
    func add(_ serial: UInt64, system: String = "s1", user: String = "") -> FakeSink {
        let sink = FakeSink()
        registry.add(
            registry.makeConnection(serial: serial, clientId: "c\(serial)", systemId: system, userId: user, sink: sink))
        return sink
    }

    /// Whom a change is to be announced to: nobody if nothing changed, otherwise the group's
    /// members as they are after the change.
    func audience(_ change: ConnectionRegistry.Change) -> [any ClientSink] {
        change.changed ? registry.members(of: GroupKey(systemId: change.systemId, name: change.group)) : []
    }

    @Test func addAndRemove() {
        #expect(registry.count == 0)
        let sink = add(1, user: "u1")
        add(2)
        #expect(registry.count == 2)
        let connection = registry.connection(serial: 1)
        #expect(connection?.clientId == "c1")
        #expect(connection?.systemId == "s1")
        #expect(connection?.userId == "u1")
        #expect(connection?.groups.isEmpty == true)
        #expect(connection.map { $0.sink === sink } == true)

        #expect(registry.remove(serial: 1).isEmpty)
        #expect(registry.connection(serial: 1) == nil)
        #expect(registry.count == 1)
        // Removing twice, or something unknown, changes nothing.
        #expect(registry.remove(serial: 1).isEmpty)
        #expect(registry.remove(serial: 999).isEmpty)
        #expect(registry.count == 1)
        #expect(registry.allSinks().count == 1)
    }

    @Test func bindAnnouncesToEveryMemberIncludingTheNewOne() throws {
        let a = add(1, user: "ua")
        let b = add(2, user: "ub")

        let first = try #require(registry.bind(serial: 1, group: "g", userId: "", extend: "x1").change)
        #expect(first.group == "g")
        #expect(first.info == PresenceInfo(clientId: "c1", userId: "ua", extend: "x1"))
        #expect(first.changed)
        #expect(first.systemId == "s1")
        #expect(audience(first).count == 1)
        #expect(contains(audience(first), a))

        let second = try #require(registry.bind(serial: 2, group: "g", userId: "override", extend: "x2").change)
        #expect(second.info == PresenceInfo(clientId: "c2", userId: "override", extend: "x2"))
        #expect(audience(second).count == 2)
        #expect(contains(audience(second), a))
        #expect(contains(audience(second), b))

        // Binding again announces nothing, but updates what presence shows.
        let again = try #require(registry.bind(serial: 2, group: "g", userId: "later", extend: "x3").change)
        #expect(!again.changed)
        #expect(audience(again).isEmpty)
        #expect(registry.members(of: GroupKey(systemId: "s1", name: "g")).count == 2)
        #expect(registry.presence(of: GroupKey(systemId: "s1", name: "g")).map(\.userId) == ["ua", "later"])
        #expect(registry.connection(serial: 2)?.groups == ["g"])

        // An unknown connection cannot bind.
        #expect(registry.bind(serial: 77, group: "g", userId: "", extend: "").change == nil)
        #expect(registry.members(of: GroupKey(systemId: "s1", name: "g")).count == 2)
    }

    @Test func unbindAnnouncesToTheRemainingMembers() throws {
        let a = add(1)
        let b = add(2)
        let c = add(3)
        for serial: UInt64 in [1, 2, 3] { _ = registry.bind(serial: serial, group: "g", userId: "u\(serial)", extend: "") }

        let change = try #require(registry.unbind(serial: 2, group: "g"))
        #expect(change.group == "g")
        #expect(change.info == PresenceInfo(clientId: "c2", userId: "u2", extend: ""))
        #expect(change.changed)
        #expect(change.systemId == "s1")
        #expect(audience(change).count == 2)
        #expect(contains(audience(change), a))
        #expect(contains(audience(change), c))
        #expect(!contains(audience(change), b))
        #expect(registry.connection(serial: 2)?.groups.isEmpty == true)
        #expect(registry.presence(of: GroupKey(systemId: "s1", name: "g")).map(\.clientId) == ["c1", "c3"])

        // Not bound (any more): an empty audience.
        let notBound = try #require(registry.unbind(serial: 2, group: "g"))
        #expect(!notBound.changed)
        #expect(audience(notBound).isEmpty)
        let neverBound = try #require(registry.unbind(serial: 1, group: "other"))
        #expect(!neverBound.changed)
        #expect(neverBound.group == "other")
        #expect(audience(neverBound).isEmpty)
        #expect(registry.unbind(serial: 99, group: "g") == nil)

        // The last member leaving empties the group.
        _ = registry.unbind(serial: 1, group: "g")
        let last = try #require(registry.unbind(serial: 3, group: "g"))
        #expect(last.changed)
        #expect(audience(last).isEmpty)
        #expect(registry.members(of: GroupKey(systemId: "s1", name: "g")).isEmpty)
        #expect(registry.presence(of: GroupKey(systemId: "s1", name: "g")).isEmpty)
    }

    @Test func removeLeavesEveryGroup() throws {
        let a = add(1)
        let b = add(2)
        add(3)
        for group in ["g1", "g2", "g3"] { _ = registry.bind(serial: 1, group: group, userId: "", extend: "").change }
        _ = registry.bind(serial: 2, group: "g1", userId: "", extend: "").change
        _ = registry.bind(serial: 3, group: "g2", userId: "", extend: "").change
        _ = registry.bind(serial: 2, group: "g2", userId: "", extend: "").change

        let changes = registry.remove(serial: 1)
        #expect(changes.map(\.group) == ["g1", "g2", "g3"])
        #expect(changes.allSatisfy { $0.info.clientId == "c1" && $0.changed && $0.systemId == "s1" })
        #expect(audience(changes[0]).count == 1)
        #expect(contains(audience(changes[0]), b))
        #expect(audience(changes[1]).count == 2)
        #expect(!contains(audience(changes[1]), a))
        #expect(audience(changes[2]).isEmpty)

        #expect(registry.presence(of: GroupKey(systemId: "s1", name: "g1")).map(\.clientId) == ["c2"])
        #expect(registry.presence(of: GroupKey(systemId: "s1", name: "g2")).map(\.clientId) == ["c2", "c3"])
        #expect(registry.members(of: GroupKey(systemId: "s1", name: "g3")).isEmpty)
        #expect(registry.clients(ofSystem: "s1").count == 2)
    }

    @Test func oneClientInTwoHundredGroups() throws {
        add(1)
        let other = add(2)
        for index in 0..<200 {
            let change = try #require(registry.bind(serial: 1, group: "g\(index)", userId: "", extend: "").change)
            #expect(audience(change).count == 1)
        }
        _ = registry.bind(serial: 2, group: "g150", userId: "", extend: "").change
        #expect(registry.connection(serial: 1)?.groups.count == 200)

        let changes = registry.remove(serial: 1)
        #expect(changes.count == 200)
        #expect(Set(changes.map(\.group)) == Set((0..<200).map { "g\($0)" }))
        let withAudience = changes.filter { !audience($0).isEmpty }
        #expect(withAudience.map(\.group) == ["g150"])
        #expect(withAudience.first.map { contains(audience($0), other) } == true)
        for index in 0..<200 where index != 150 {
            #expect(registry.members(of: GroupKey(systemId: "s1", name: "g\(index)")).isEmpty)
        }
    }

    @Test func fiveHundredClientsInOneGroup() throws {
        let key = GroupKey(systemId: "s1", name: "big")
        var sinks: [FakeSink] = []
        for serial: UInt64 in 1...500 {
            sinks.append(add(serial))
            let change = try #require(registry.bind(serial: serial, group: "big", userId: "", extend: "").change)
            #expect(audience(change).count == Int(serial))
        }
        #expect(registry.members(of: key).count == 500)
        let presence = registry.presence(of: key)
        #expect(presence.count == 500)
        #expect(presence.map(\.clientId) == presence.map(\.clientId).sorted())

        let changes = registry.remove(serial: 250)
        #expect(changes.count == 1)
        #expect(audience(changes[0]).count == 499)
        #expect(!contains(audience(changes[0]), sinks[249]))
        #expect(registry.members(of: key).count == 499)
    }

    @Test func groupsBelongToOneSystem() throws {
        let a = add(1, system: "s1")
        let b = add(2, system: "s2")
        let joinA = try #require(registry.bind(serial: 1, group: "room", userId: "", extend: "").change)
        let joinB = try #require(registry.bind(serial: 2, group: "room", userId: "", extend: "").change)
        #expect(joinA.systemId == "s1" && joinB.systemId == "s2")
        #expect(audience(joinA).count == 1)
        #expect(audience(joinB).count == 1)
        #expect(contains(audience(joinB), b))
        #expect(!contains(audience(joinB), a))

        let room1 = registry.members(of: GroupKey(systemId: "s1", name: "room"))
        let room2 = registry.members(of: GroupKey(systemId: "s2", name: "room"))
        #expect(room1.count == 1 && contains(room1, a))
        #expect(room2.count == 1 && contains(room2, b))
        #expect(registry.presence(of: GroupKey(systemId: "s2", name: "room")).map(\.clientId) == ["c2"])

        let leave = try #require(registry.unbind(serial: 1, group: "room"))
        #expect(audience(leave).isEmpty)
        #expect(registry.members(of: GroupKey(systemId: "s2", name: "room")).count == 1)
    }

    @Test func presenceIsSortedByClientID() {
        for (serial, id) in [(UInt64(1), "zeta"), (2, "alpha"), (3, "Mike"), (4, "beta")] {
            registry.add(registry.makeConnection(serial: serial, clientId: id, systemId: "s", userId: "u\(serial)", sink: FakeSink()))
            _ = registry.bind(serial: serial, group: "g", userId: "", extend: "e\(serial)")
        }
        let presence = registry.presence(of: GroupKey(systemId: "s", name: "g"))
        #expect(presence.map(\.clientId) == ["Mike", "alpha", "beta", "zeta"])
        #expect(presence.map(\.userId) == ["u3", "u2", "u4", "u1"])
        #expect(presence.map(\.extend) == ["e3", "e2", "e4", "e1"])
        #expect(registry.presence(of: GroupKey(systemId: "s", name: "nobody")).isEmpty)
    }

    @Test func clientsOfSystem() {
        let a = add(1, system: "s1")
        let b = add(2, system: "s1")
        let c = add(3, system: "s2")
        let s1 = registry.clients(ofSystem: "s1")
        #expect(s1.count == 2)
        #expect(contains(s1, a) && contains(s1, b) && !contains(s1, c))
        #expect(registry.clients(ofSystem: "s2").count == 1)
        #expect(registry.clients(ofSystem: "s3").isEmpty)
        registry.remove(serial: 1)
        registry.remove(serial: 2)
        #expect(registry.clients(ofSystem: "s1").isEmpty)
        #expect(registry.allSinks().count == 1)
    }

    @Test func concurrentBindsAndRemovesStayConsistent() async {
        for serial: UInt64 in 1...200 { add(serial) }
        await withTaskGroup(of: Void.self) { group in
            for serial: UInt64 in 1...200 {
                group.addTask { [registry] in
                    _ = registry.bind(serial: serial, group: "g\(serial % 4)", userId: "", extend: "")
                    if serial % 2 == 0 { registry.remove(serial: serial) }
                }
            }
        }
        #expect(registry.count == 100)
        let total = (0..<4).map { registry.members(of: GroupKey(systemId: "s1", name: "g\($0)")).count }.reduce(0, +)
        #expect(total == 100)
    }
}

@Suite("ConnectionRegistry bounds")
struct ConnectionRegistryBoundTests {
    @Test("a client is in at most FieldLimits.groupsPerClient groups; a bind past it is refused, rebinding an old one is not")
    func groupsPerClient() {
        let registry = ConnectionRegistry()
        registry.add(registry.makeConnection(serial: 1, clientId: "c", systemId: "s", userId: "", sink: FakeSink()))
        for index in 0..<FieldLimits.groupsPerClient {
            #expect(registry.bind(serial: 1, group: "g\(index)", userId: "", extend: "").change != nil)
        }
        guard case .tooManyGroups = registry.bind(serial: 1, group: "one-more", userId: "", extend: "") else {
            Issue.record("a bind past the limit is refused")
            return
        }
        #expect(registry.bind(serial: 1, group: "g0", userId: "", extend: "x").change?.changed == false)
        #expect(registry.connection(serial: 1)?.groups.count == FieldLimits.groupsPerClient)
    }
}

@Suite("Identifiers compare by bytes")
struct ExactIdentifierTests {
    @Test("\"é\" composed and decomposed are two groups, as they are on Kafka and in etcd; leaving one leaves only it")
    func canonicalEquivalentGroupsStayApart() {
        let composed = "caf\u{E9}"
        let decomposed = "cafe\u{301}"
        #expect(composed == decomposed, "Swift calls them equal")
        #expect(GroupKey(systemId: "s", name: composed) != GroupKey(systemId: "s", name: decomposed))
        let registry = ConnectionRegistry()
        registry.add(registry.makeConnection(serial: 1, clientId: "c", systemId: "s", userId: "", sink: FakeSink()))
        #expect(registry.bind(serial: 1, group: composed, userId: "", extend: "").change?.changed == true)
        #expect(registry.bind(serial: 1, group: decomposed, userId: "", extend: "").change?.changed == true)
        #expect(registry.connection(serial: 1)?.groups.count == 2)
        _ = registry.unbind(serial: 1, group: decomposed)
        #expect(registry.presence(of: GroupKey(systemId: "s", name: composed)).count == 1)
        #expect(registry.presence(of: GroupKey(systemId: "s", name: decomposed)).isEmpty)
        registry.remove(serial: 1)
        #expect(registry.presence(of: GroupKey(systemId: "s", name: composed)).isEmpty, "nothing left behind")
    }

    @Test("the Kelvin sign is not K for idempotency keys either")
    func idempotencyKeysByBytes() async {
        let cache = IdempotencyCache<String>()
        _ = await cache.answer(for: "KIOSK") { "first" }
        let other = await cache.answer(for: "\u{212A}IOSK") { "second" }
        #expect(other == "second")
    }
}
