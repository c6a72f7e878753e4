import Foundation
import Testing

@testable import HeraldCore

@Suite("MessageRouter over LocalBus")
struct RouterTests {
    let h = Harness()

    func expectError(
        _ code: Int, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () async throws(HeraldError) -> Void
    ) async {
        do throws(HeraldError) {
            try await body()
            Issue.record("expected HeraldError \(code), nothing was thrown", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: send_to_client

    @Test func sendToClientDeliversOnePushFrame() async throws {
        let client = h.connect(system: "shop", user: "alice")
        let other = h.connect(system: "shop", user: "bob")
        let before = Clock.nowMillis()
        let payload = PushPayload(sendUserId: "server", code: 7, msg: "hello", data: .object(["k": .string("v")]))
        let messageId = try await h.router.sendToClient(systemId: "shop", clientId: client.raw, payload: payload)
        let after = Clock.nowMillis()

        #expect(client.sink.frames.count == 1)
        #expect(other.sink.frames.isEmpty)
        let frame = try #require(try client.sink.objects().first)
        #expect(frame["messageId"] == .string(messageId))
        #expect(frame["sendUserId"] == .string("server"))
        #expect(frame["code"] == .integer(7))
        #expect(frame["msg"] == .string("hello"))
        #expect(frame["data"] == .object(["k": .string("v")]))
        #expect(frame["groupName"] == nil)
        #expect(frame["redelivered"] == nil)
        guard case .integer(let ts)? = frame["ts"] else {
            Issue.record("ts missing or not an integer: \(String(describing: frame["ts"]))")
            return
        }
        #expect(ts >= before && ts <= after)
        // `pos`: where the journal stands past this message (resume), opaque and decodable.
        guard case .string(let pos)? = frame["pos"], LogCut(encoded: pos) != nil else {
            Issue.record("pos missing or not a log cut: \(String(describing: frame["pos"]))")
            return
        }
        #expect(Set(frame.keys) == ["messageId", "sendUserId", "code", "msg", "data", "ts", "pos"])
    }

    @Test(arguments: [
        JSONValue.string("text with \"quotes\" / and ünïcode"),
        .integer(42),
        .integer(-9_007_199_254_740_993),
        .double(3.25),
        .bool(true),
        .null,
        .array([.integer(1), .string("two"), .null, .array([])]),
        .object(["nested": .object(["list": .array([.bool(false)])]), "n": .double(-0.5)]),
        .object([:]),
    ])
    func dataReachesTheClientAsTheSameJSONValue(data: JSONValue) async throws {
        let client = h.connect(system: "shop")
        _ = try await h.router.sendToClient(systemId: "shop", clientId: client.raw, payload: PushPayload(data: data))
        let frame = try #require(try client.sink.objects().first)
        #expect(frame["data"] == data)
        // Defaults of an empty payload.
        #expect(frame["sendUserId"] == .string(""))
        #expect(frame["code"] == .integer(0))
        #expect(frame["msg"] == .string(""))
        // Also through JSONSerialization, independent of JSONValue's decoder.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(client.sink.frames[0].utf8)) as? [String: Any])
        #expect(object.keys.contains("data"))
    }

    @Test func garbageClientIDIs4001() async throws {
        let client = h.connect(system: "shop")
        for raw in ["", "garbage", String(client.raw.dropLast(3)), String(repeating: "A", count: 200)] {
            await expectError(4001) { () async throws(HeraldError) in
                _ = try await h.router.sendToClient(systemId: "shop", clientId: raw, payload: PushPayload())
            }
        }
        #expect(client.sink.frames.isEmpty)
        #expect(h.journal.count == 0)
    }

    @Test func errorsCarryTheMessageIDTheyWereTracedUnder() async throws {
        do throws(HeraldError) {
            _ = try await h.router.sendToClient(systemId: "shop", clientId: "nope", payload: PushPayload())
            Issue.record("expected 4001")
        } catch {
            #expect(error.code == 4001)
            guard case .object(let data)? = error.data, case .string(let messageId)? = data["messageId"] else {
                Issue.record("no messageId in \(String(describing: error.data))")
                return
            }
            let steps = await h.steps(messageId)
            #expect(steps.map(\.step) == [.accepted, .dropped])
            #expect(steps.last?.reason == "answered 4001")
            #expect(steps.last?.clientId == "nope")
            #expect(steps.first?.node == "node-a")
        }
    }

    @Test func clientOfAnotherSystemIs4030() async throws {
        let client = h.connect(system: "other")
        await expectError(4030) { () async throws(HeraldError) in
            _ = try await h.router.sendToClient(systemId: "shop", clientId: client.raw, payload: PushPayload())
        }
        await expectError(4030) { () async throws(HeraldError) in try await h.router.bind(systemId: "shop", clientId: client.raw, group: "g", userId: "", extend: "") }
        await expectError(4030) { () async throws(HeraldError) in try await h.router.close(systemId: "shop", clientId: client.raw) }
        await expectError(4030) { () async throws(HeraldError) in _ = try await h.router.clientStatus(systemId: "shop", clientId: client.raw) }
        #expect(client.sink.frames.isEmpty)
        #expect(client.sink.closeCodes.isEmpty)
        #expect(h.journal.count == 0)
    }

    @Test func removedClientIs4040() async throws {
        let client = h.connect(system: "shop")
        h.registry.remove(serial: client.serial)
        do throws(HeraldError) {
            _ = try await h.router.sendToClient(systemId: "shop", clientId: client.raw, payload: PushPayload())
            Issue.record("expected 4040")
        } catch {
            #expect(error.code == 4040)
            #expect(error.status == 404)
            guard case .object(let data)? = error.data, case .string(let messageId)? = data["messageId"] else {
                Issue.record("no messageId")
                return
            }
            let steps = await h.steps(messageId)
            #expect(steps.map(\.step) == [.accepted, .dropped])
            #expect(steps.last?.reason == "answered 4040")
            #expect(steps.last?.clientId == client.raw)
        }
        #expect(client.sink.frames.isEmpty)
        #expect(h.journal.count == 0)
    }

    @Test func idFromAPreviousStartIs4040() async throws {
        let previous = Harness(startedAt: 1_700_000_000_000, codec: h.codec)
        let current = Harness(startedAt: 1_700_000_050_000, codec: h.codec)
        let old = previous.connect(system: "shop")
        // The new start has a connection with the very same serial: only the epoch tells them apart.
        let fresh = current.connect(system: "shop")
        #expect(old.serial == fresh.serial)
        #expect(previous.membership.local.epoch != current.membership.local.epoch)

        await expectError(4040) { () async throws(HeraldError) in
            _ = try await current.router.sendToClient(systemId: "shop", clientId: old.raw, payload: PushPayload())
        }
        await expectError(4040) { () async throws(HeraldError) in
            try await current.router.bind(systemId: "shop", clientId: old.raw, group: "g", userId: "", extend: "")
        }
        #expect(fresh.sink.frames.isEmpty)
        #expect(old.sink.frames.isEmpty)
        let status = try await current.router.clientStatus(systemId: "shop", clientId: old.raw)
        #expect(status.online == false)
        #expect(status.groups.isEmpty)
        #expect(current.journal.count == 0)
    }

    // MARK: send_to_clients

    @Test func sendToClientsListsTheFailures() async throws {
        let a = h.connect(system: "shop")
        let b = h.connect(system: "shop")
        let foreign = h.connect(system: "other")
        let gone = h.connect(system: "shop")
        h.registry.remove(serial: gone.serial)

        let result = try await h.router.sendToClients(
            systemId: "shop", clientIds: [a.raw, "garbage", foreign.raw, b.raw, gone.raw],
            payload: PushPayload(msg: "batch"))
        #expect(result.failed.map(\.clientId) == ["garbage", foreign.raw, gone.raw])
        #expect(result.failed.map(\.error.code) == [4001, 4030, 4040])

        for sink in [a.sink, b.sink] {
            let frames = try sink.objects()
            #expect(frames.count == 1)
            #expect(frames.first?["messageId"] == .string(result.messageId))
            #expect(frames.first?["msg"] == .string("batch"))
        }
        #expect(foreign.sink.frames.isEmpty)
        #expect(gone.sink.frames.isEmpty)

        let steps = await h.steps(result.messageId)
        #expect(steps.filter { $0.step == .delivered }.compactMap(\.clientId).sorted() == [a.raw, b.raw].sorted())
        #expect(steps.filter { $0.step == .produced }.count == 2)
        #expect(steps.filter { $0.step == .dropped }.map(\.reason) == ["answered 4001", "answered 4030", "answered 4040"])

        let empty = try await h.router.sendToClients(systemId: "shop", clientIds: [], payload: PushPayload())
        #expect(empty.failed.isEmpty)
        let allBad = try await h.router.sendToClients(systemId: "shop", clientIds: ["x", "y"], payload: PushPayload())
        #expect(allBad.failed.map(\.error.code) == [4001, 4001])
    }

    // MARK: groups and systems

    @Test func sendToGroupEncodesOneFrameForEveryMember() async throws {
        var members: [Harness.Client] = []
        for index in 0..<20 {
            let client = h.connect(system: "shop", user: "u\(index)")
            try await h.router.bind(systemId: "shop", clientId: client.raw, group: "room", userId: "", extend: "")
            members.append(client)
        }
        let outsider = h.connect(system: "shop")
        let otherSystem = h.connect(system: "other")
        try await h.router.bind(systemId: "other", clientId: otherSystem.raw, group: "room", userId: "", extend: "")
        let presenceCounts = members.map { $0.sink.frames.count }
        let otherCount = otherSystem.sink.frames.count

        let messageId = try await h.router.sendToGroup(
            systemId: "shop", group: "room", payload: PushPayload(sendUserId: "s", code: 3, msg: "hi", data: .array([.integer(1)])))

        var texts: Set<String> = []
        for (member, count) in zip(members, presenceCounts) {
            #expect(member.sink.frames.count == count + 1)
            if let last = member.sink.frames.last { texts.insert(last) }
        }
        #expect(texts.count == 1, "every member must receive the same string")
        let frame = try decodeObject(try #require(texts.first))
        #expect(frame["messageId"] == .string(messageId))
        #expect(frame["groupName"] == .string("room"))
        #expect(frame["code"] == .integer(3))
        #expect(frame["data"] == .array([.integer(1)]))
        #expect(frame["ts"] != nil)
        #expect(outsider.sink.frames.isEmpty)
        #expect(otherSystem.sink.frames.count == otherCount)

        let steps = await h.steps(messageId)
        #expect(steps.first?.step == .accepted)
        #expect(steps.contains { $0.step == .produced && $0.topic == Topics.broadcast })
        #expect(steps.contains { $0.step == .delivered && $0.count == 20 })
        #expect(!steps.contains { $0.step == .dropped })
    }

    @Test func sendToEmptyGroupSucceedsAndDeliversNothing() async throws {
        let client = h.connect(system: "shop")
        let messageId = try await h.router.sendToGroup(systemId: "shop", group: "empty", payload: PushPayload())
        #expect(client.sink.frames.isEmpty)
        let steps = await h.steps(messageId)
        #expect(steps.contains { $0.step == .delivered && $0.count == 0 })
    }

    @Test func slowMembersAreTracedAsDropped() async throws {
        let good = h.connect(system: "shop")
        let slow = h.connect(system: "shop", sink: FakeSink(accepting: false))
        for client in [good, slow] {
            try await h.router.bind(systemId: "shop", clientId: client.raw, group: "g", userId: "", extend: "")
        }
        let messageId = try await h.router.sendToGroup(systemId: "shop", group: "g", payload: PushPayload())
        let steps = await h.steps(messageId)
        #expect(steps.contains { $0.step == .delivered && $0.count == 1 })
        #expect(steps.contains { $0.step == .dropped && $0.count == 1 && $0.reason == "slow consumer" })

        let unicast = try await h.router.sendToClient(systemId: "shop", clientId: slow.raw, payload: PushPayload())
        let unicastSteps = await h.steps(unicast)
        #expect(unicastSteps.contains { $0.step == .dropped && $0.clientId == slow.raw && $0.reason == "slow consumer" })
        #expect(!unicastSteps.contains { $0.step == .delivered })
    }

    @Test func sendToSystemReachesOnlyThatSystem() async throws {
        let a = h.connect(system: "shop")
        let b = h.connect(system: "shop")
        let c = h.connect(system: "blog")
        let messageId = try await h.router.sendToSystem(systemId: "shop", payload: PushPayload(msg: "all"))
        #expect(a.sink.frames.count == 1)
        #expect(b.sink.frames.count == 1)
        #expect(c.sink.frames.isEmpty)
        #expect(a.sink.frames == b.sink.frames)
        let frame = try #require(try a.sink.objects().first)
        #expect(frame["messageId"] == .string(messageId))
        #expect(frame["msg"] == .string("all"))
        #expect(frame["groupName"] == nil)
        let steps = await h.steps(messageId)
        #expect(steps.contains { $0.step == .delivered && $0.count == 2 })
    }

    // MARK: bind, unbind, close, status, online list

    @Test func bindUnbindAndCloseThroughTheRouter() async throws {
        let a = h.connect(system: "shop", user: "alice")
        let b = h.connect(system: "shop", user: "bob")

        try await h.router.bind(systemId: "shop", clientId: a.raw, group: "g", userId: "", extend: "ea")
        let joinA = try #require(try a.sink.objects().last)
        #expect(joinA["code"] == .integer(1001))
        #expect(joinA["groupName"] == .string("g"))
        #expect(joinA["data"] == .object(["clientId": .string(a.raw), "userId": .string("alice"), "extend": .string("ea")]))
        #expect(joinA["ts"] != nil)
        #expect(joinA["messageId"] == .string(""))

        try await h.router.bind(systemId: "shop", clientId: b.raw, group: "g", userId: "robert", extend: "")
        let bData = JSONValue.object(["clientId": .string(b.raw), "userId": .string("robert"), "extend": .string("")])
        #expect(a.sink.frames.count == 2)
        #expect(b.sink.frames.count == 1)
        #expect(try a.sink.objects().last?["data"] == bData)
        #expect(try b.sink.objects().last?["data"] == bData)
        #expect(try b.sink.objects().last?["code"] == .integer(1001))

        // A repeated bind announces nothing.
        try await h.router.bind(systemId: "shop", clientId: b.raw, group: "g", userId: "robert", extend: "")
        #expect(a.sink.frames.count == 2)
        #expect(b.sink.frames.count == 1)

        try await h.router.unbind(systemId: "shop", clientId: b.raw, group: "g")
        #expect(a.sink.frames.count == 3)
        #expect(b.sink.frames.count == 1)
        let left = try #require(try a.sink.objects().last)
        #expect(left["code"] == .integer(1002))
        #expect(left["groupName"] == .string("g"))
        #expect(left["data"] == bData)

        // Unbinding what is not bound is fine and silent.
        try await h.router.unbind(systemId: "shop", clientId: b.raw, group: "g")
        #expect(a.sink.frames.count == 3)

        try await h.router.close(systemId: "shop", clientId: b.raw)
        #expect(b.sink.closeCodes == [1000])
        #expect(a.sink.closeCodes.isEmpty)

        // Bind, unbind and close are carried as unicast messages.
        let records = h.journal.records(matching: ReplayFilter())
        #expect(records.map(\.message.kind) == [.bind, .bind, .bind, .unbind, .unbind, .close])
        #expect(records.allSatisfy { $0.placement.topic == Topics.unicast })
    }

    @Test func disconnectAnnouncesLeave() async throws {
        let a = h.connect(system: "shop")
        let b = h.connect(system: "shop", user: "bob")
        try await h.router.bind(systemId: "shop", clientId: a.raw, group: "g", userId: "", extend: "")
        try await h.router.bind(systemId: "shop", clientId: b.raw, group: "g", userId: "", extend: "x")
        let before = a.sink.frames.count
        for change in h.registry.remove(serial: b.serial) { h.delivery.announce(.left, change) }
        #expect(a.sink.frames.count == before + 1)
        let frame = try #require(try a.sink.objects().last)
        #expect(frame["code"] == .integer(1002))
        #expect(frame["msg"] == .string("client left the group"))
        #expect(frame["data"] == .object(["clientId": .string(b.raw), "userId": .string("bob"), "extend": .string("x")]))
    }

    @Test func presenceTravelsTheBusWhenOneIsSet() async throws {
        let node = Harness(announceThroughBus: true)
        let a = node.connect(system: "shop", user: "alice")
        let b = node.connect(system: "shop", user: "bob")
        try await node.router.bind(systemId: "shop", clientId: a.raw, group: "g", userId: "", extend: "")
        #expect(await eventually { a.sink.frames.count == 1 })
        try await node.router.bind(systemId: "shop", clientId: b.raw, group: "g", userId: "", extend: "eb")
        #expect(await eventually { a.sink.frames.count == 2 && b.sink.frames.count == 1 })
        let bData = JSONValue.object(["clientId": .string(b.raw), "userId": .string("bob"), "extend": .string("eb")])
        let joinB = try #require(try b.sink.objects().first)
        #expect(joinB["code"] == .integer(1001))
        #expect(joinB["groupName"] == .string("g"))
        #expect(joinB["data"] == bData)
        #expect(try a.sink.objects().last == joinB)

        try await node.router.unbind(systemId: "shop", clientId: b.raw, group: "g")
        #expect(await eventually { a.sink.frames.count == 3 })
        let left = try #require(try a.sink.objects().last)
        #expect(left["code"] == .integer(1002))
        #expect(left["data"] == bData)
        #expect(b.sink.frames.count == 1)

        // The announcements were carried as group messages of the broadcast topic.
        let presence = node.journal.records(matching: ReplayFilter()).filter { $0.message.kind == .presence }
        #expect(presence.count == 3)
        #expect(presence.allSatisfy { $0.placement.topic == Topics.broadcast && $0.message.groupName == "g" })
        #expect(presence.last?.message.body == .presence(.left, PresenceInfo(clientId: b.raw, userId: "bob", extend: "eb")))
    }

    @Test func deliveryTellsLocalMembersOfPresenceFromTheBus() throws {
        let a = h.connect(system: "shop")
        let stranger = h.connect(system: "shop")
        _ = h.registry.bind(serial: a.serial, group: "g", userId: "", extend: "").change
        let info = PresenceInfo(clientId: "remote-client", userId: "r", extend: "x")
        h.delivery.deliver(
            BusMessage(
                messageId: "", systemId: "shop", target: .group("g"), body: .presence(.joined, info), acceptedAt: 1234,
                acceptedBy: "node-b"))
        let frame = try #require(try a.sink.objects().first)
        #expect(a.sink.frames.count == 1)
        #expect(frame["code"] == .integer(1001))
        #expect(frame["ts"] == .integer(1234))
        #expect(frame["data"] == .object(["clientId": .string("remote-client"), "userId": .string("r"), "extend": .string("x")]))
        #expect(stranger.sink.frames.isEmpty)
        // Presence is never a push: it has no push frame and is never redelivered.
        #expect(BusMessage(messageId: "", systemId: "shop", target: .group("g"), body: .presence(.left, info), acceptedAt: 0, acceptedBy: "n").pushFrame() == nil)
    }

    @Test func statusAndOnlineList() async throws {
        let a = h.connect(system: "shop", user: "alice")
        let b = h.connect(system: "shop", user: "bob")
        for group in ["zeta", "alpha", "mid"] {
            try await h.router.bind(systemId: "shop", clientId: a.raw, group: group, userId: "", extend: "e-\(group)")
        }
        try await h.router.bind(systemId: "shop", clientId: b.raw, group: "alpha", userId: "", extend: "")

        let status = try await h.router.clientStatus(systemId: "shop", clientId: a.raw)
        #expect(status.online)
        #expect(status.groups == ["alpha", "mid", "zeta"])
        let statusB = try await h.router.clientStatus(systemId: "shop", clientId: b.raw)
        #expect(statusB.online && statusB.groups == ["alpha"])

        let list = (await h.router.onlineMembers(systemId: "shop", group: "alpha")).list
        #expect(list.count == 2)
        #expect(list.map(\.clientId) == [a.raw, b.raw].sorted())
        #expect(Set(list.map(\.userId)) == ["alice", "bob"])
        #expect(list.first { $0.clientId == a.raw }?.extend == "e-alpha")
        #expect((await h.router.onlineMembers(systemId: "other", group: "alpha")).list.isEmpty)
        #expect((await h.router.onlineMembers(systemId: "shop", group: "none")).list.isEmpty)

        h.registry.remove(serial: a.serial)
        let offline = try await h.router.clientStatus(systemId: "shop", clientId: a.raw)
        #expect(!offline.online)
        #expect(offline.groups.isEmpty)
        #expect((await h.router.onlineMembers(systemId: "shop", group: "alpha")).list.map(\.clientId) == [b.raw])
        await expectError(4001) { () async throws(HeraldError) in _ = try await h.router.clientStatus(systemId: "shop", clientId: "junk") }
    }

    // MARK: redelivery

    @Test func redeliverMarksFrames() async throws {
        let a = h.connect(system: "shop")
        let b = h.connect(system: "shop")
        try await h.router.bind(systemId: "shop", clientId: b.raw, group: "g", userId: "", extend: "")
        let unicast = try await h.router.sendToClient(systemId: "shop", clientId: a.raw, payload: PushPayload(msg: "one"))
        let group = try await h.router.sendToGroup(systemId: "shop", group: "g", payload: PushPayload(msg: "two"))

        let original = try #require(h.journal.records(matching: ReplayFilter(messageId: unicast)).first)
        #expect(try await h.router.redeliver(original.message))
        let frames = try a.sink.objects()
        #expect(frames.count == 2)
        #expect(frames[0]["redelivered"] == nil)
        #expect(frames[1]["redelivered"] == .bool(true))
        #expect(frames[1]["messageId"] == .string(unicast))
        #expect(frames[1]["msg"] == .string("one"))
        let steps = await h.steps(unicast)
        #expect(steps.contains { $0.step == .redelivered && $0.topic == Topics.unicast })

        let groupRecord = try #require(h.journal.records(matching: ReplayFilter(messageId: group)).first)
        #expect(try await h.router.redeliver(groupRecord.message))
        let groupFrames = try b.sink.objects().filter { $0["messageId"] == .string(group) }
        #expect(groupFrames.count == 2)
        #expect(groupFrames.last?["redelivered"] == .bool(true))
        #expect(groupFrames.last?["groupName"] == .string("g"))

        // Redelivered messages are carried again.
        #expect(h.journal.records(matching: ReplayFilter(messageId: unicast)).count == 2)
        #expect(h.journal.records(matching: ReplayFilter(messageId: unicast)).last?.message.redelivered == true)

        // Not to a client that is gone, and never a control message.
        h.registry.remove(serial: a.serial)
        #expect(try await h.router.redeliver(original.message) == false)
        #expect(a.sink.frames.count == 2)
        let bindRecord = try #require(h.journal.records(matching: ReplayFilter()).first { $0.message.kind == .bind })
        #expect(try await h.router.redeliver(bindRecord.message) == false)
    }

    // MARK: trace and journal

    @Test func traceOfADeliveredUnicast() async throws {
        let client = h.connect(system: "shop")
        let messageId = try await h.router.sendToClient(systemId: "shop", clientId: client.raw, payload: PushPayload())
        let steps = await h.steps(messageId)
        #expect(steps.count == 3)
        #expect(steps.first?.step == .accepted)
        #expect(Set(steps.map(\.step)) == [.accepted, .produced, .delivered])
        let produced = try #require(steps.first { $0.step == .produced })
        #expect(produced.topic == Topics.unicast)
        #expect(produced.partition == 0)
        #expect(produced.offset == 0)
        let delivered = try #require(steps.first { $0.step == .delivered })
        #expect(delivered.clientId == client.raw)
        #expect(delivered.node == "node-a")
    }

    @Test func deliveryDropsWhatItDoesNotHold() async throws {
        let client = h.connect(system: "shop")
        let id = try h.codec.open(client.raw)
        var elsewhere = id
        elsewhere.epoch += 1
        var missing = id
        missing.serial += 1000
        let cases: [(ClientID, String)] = [(elsewhere, "shop"), (missing, "shop"), (id, "blog")]
        for (index, (target, system)) in cases.enumerated() {
            let messageId = "m\(index)"
            h.delivery.deliver(
                BusMessage(
                    messageId: messageId, systemId: system, target: .client(target, raw: "raw\(index)"),
                    body: .push(PushPayload()), acceptedAt: 1, acceptedBy: "node-a"))
            let steps = await h.steps(messageId)
            #expect(steps.count == 1)
            #expect(steps.first?.step == .dropped)
            #expect(steps.first?.reason == "offline")
            #expect(steps.first?.clientId == "raw\(index)")
        }
        #expect(client.sink.frames.isEmpty)
    }

    @Test func journalRecordsTopicsAndIncreasingOffsets() async throws {
        let a = h.connect(system: "shop")
        try await h.router.bind(systemId: "shop", clientId: a.raw, group: "g", userId: "", extend: "")
        var unicastIDs: [String] = []
        for _ in 0..<3 {
            unicastIDs.append(try await h.router.sendToClient(systemId: "shop", clientId: a.raw, payload: PushPayload()))
        }
        let groupID = try await h.router.sendToGroup(systemId: "shop", group: "g", payload: PushPayload())
        let systemID = try await h.router.sendToSystem(systemId: "shop", payload: PushPayload())

        let records = h.journal.records(matching: ReplayFilter())
        #expect(records.count == 6)
        let unicast = records.filter { $0.placement.topic == Topics.unicast }
        let broadcast = records.filter { $0.placement.topic == Topics.broadcast }
        #expect(unicast.map(\.placement.offset) == [0, 1, 2, 3])
        #expect(unicast.allSatisfy { $0.placement.partition == 0 })
        #expect(Array(unicast.dropFirst().map(\.message.messageId)) == unicastIDs)
        #expect(unicast.first?.message.kind == .bind)
        #expect(broadcast.map(\.message.messageId) == [groupID, systemID])
        #expect(broadcast.map(\.placement.offset) == [0, 1])
        #expect(broadcast.map(\.message.kind) == [.group, .system])
        #expect(records.map(\.timestamp) == records.map(\.timestamp).sorted())
        #expect(records.allSatisfy { $0.message.systemId == "shop" && $0.message.acceptedBy == "node-a" })

        for messageId in unicastIDs {
            let produced = await h.steps(messageId).first { $0.step == .produced }
            let record = records.first { $0.message.messageId == messageId }
            #expect(produced?.offset == record?.placement.offset)
        }
    }

    @Test func standaloneMembership() {
        let membership = StandaloneMembership(nodeId: "n", address: "a:1", startedAt: 1234)
        #expect(membership.local.slot == 0)
        #expect(membership.local.epoch == 1234)
        #expect(membership.local.startedAt == 1234)
        #expect(membership.isReady)
        #expect(membership.holds(slot: 0, epoch: 1234))
        #expect(!membership.holds(slot: 0, epoch: 1233))
        #expect(!membership.holds(slot: 1, epoch: 1234))
        let info = NodeInfo(identity: membership.local, connections: 3)
        #expect(info.nodeId == "n" && info.address == "a:1" && info.connections == 3 && info.epoch == 1234)
    }
}
