import Foundation
import Testing

@testable import HeraldCore

@Suite("WireFormat and presence")
struct WireFormatTests {
    let codec = try! ClientIDCodec(base64Keys: testKey(21))

    func messages() -> [BusMessage] {
        let id = ClientID(address: "10.0.0.2:8080", slot: 3, epoch: 99, serial: 12, systemId: "shop")
        let raw = codec.seal(id)
        let payload = PushPayload(sendUserId: "u", code: 5, msg: "m", data: .object(["a": .array([.integer(1), .null])]))
        let bodies: [MessageBody] = [
            .push(payload), .push(PushPayload()), .bind(group: "g", userId: "u1", extend: "e"),
            .bind(group: "g", userId: "", extend: ""), .unbind(group: "g"), .close,
        ]
        var result: [BusMessage] = []
        for (index, body) in bodies.enumerated() {
            result.append(
                BusMessage(
                    messageId: "m\(index)", systemId: "shop", target: .client(id, raw: raw), body: body, acceptedAt: 1_000 + Int64(index),
                    acceptedBy: "node-a", redelivered: index == 1))
        }
        result.append(BusMessage(messageId: "g", systemId: "shop", target: .group("room"), body: .push(payload), acceptedAt: 5, acceptedBy: "n"))
        result.append(
            BusMessage(messageId: "s", systemId: "shop", target: .system, body: .push(PushPayload(data: .null)), acceptedAt: 6, acceptedBy: "n", redelivered: true))
        for event in [PresenceEvent.joined, .left] {
            result.append(
                BusMessage(
                    messageId: "", systemId: "shop", target: .group("room"),
                    body: .presence(event, PresenceInfo(clientId: raw, userId: "u", extend: "e")), acceptedAt: 7, acceptedBy: "n"))
        }
        return result
    }

    @Test func roundTripsEveryKindOfMessage() throws {
        for message in messages() {
            let bytes = WireFormat.encode(message)
            let decoded = try #require(WireFormat.decode(bytes, codec: codec), "\(String(decoding: bytes, as: UTF8.self))")
            #expect(decoded == message)
            #expect(decoded.pushFrame() == message.pushFrame())
        }
    }

    @Test func refusesWhatItCannotRead() throws {
        let message = messages()[0]
        let other = try ClientIDCodec(base64Keys: testKey(22))
        #expect(WireFormat.decode(WireFormat.encode(message), codec: other) == nil)
        #expect(WireFormat.decode(WireFormat.encode(messages()[6]), codec: other) != nil)
        #expect(WireFormat.decode([], codec: codec) == nil)
        #expect(WireFormat.decode(Array("not json".utf8), codec: codec) == nil)
        #expect(WireFormat.decode(Array("{}".utf8), codec: codec) == nil)

        let text = String(decoding: WireFormat.encode(messages()[6]), as: UTF8.self)
        #expect(text.contains("\"v\":1"))
        let v2 = text.replacingOccurrences(of: "\"v\":1", with: "\"v\":2")
        #expect(WireFormat.decode(Array(v2.utf8), codec: codec) == nil)
        let unknownKind = text.replacingOccurrences(of: "\"group\"", with: "\"planet\"")
        #expect(unknownKind != text)
        #expect(WireFormat.decode(Array(unknownKind.utf8), codec: codec) == nil)
    }

    @Test func clientStatusAndOnlineMembersThroughLocalPresence() async throws {
        let h = Harness()
        let a = h.connect(system: "shop", user: "alice")
        let foreign = h.connect(system: "blog")
        try await h.router.bind(systemId: "shop", clientId: a.raw, group: "b", userId: "", extend: "")
        try await h.router.bind(systemId: "shop", clientId: a.raw, group: "a", userId: "", extend: "x")

        let status = try await h.router.clientStatus(systemId: "shop", clientId: a.raw)
        #expect(status.online)
        #expect(status.groups == ["a", "b"])
        let members = await h.router.onlineMembers(systemId: "shop", group: "a")
        #expect(members.list == [PresenceInfo(clientId: a.raw, userId: "alice", extend: "x")])
        #expect(members.unreachable.isEmpty)

        do throws(HeraldError) {
            _ = try await h.router.clientStatus(systemId: "shop", clientId: foreign.raw)
            Issue.record("expected 4030")
        } catch {
            #expect(error.code == 4030)
        }
        do throws(HeraldError) {
            _ = try await h.router.clientStatus(systemId: "shop", clientId: "junk")
            Issue.record("expected 4001")
        } catch {
            #expect(error.code == 4001)
        }

        let later = Harness(startedAt: 1_700_000_099_000, codec: h.codec)
        later.connect(system: "shop")
        let stale = try await later.router.clientStatus(systemId: "shop", clientId: a.raw)
        #expect(!stale.online && stale.groups.isEmpty)

        h.registry.remove(serial: a.serial)
        let gone = try await h.router.clientStatus(systemId: "shop", clientId: a.raw)
        #expect(!gone.online && gone.groups.isEmpty)
        #expect(await h.router.onlineMembers(systemId: "shop", group: "a").list.isEmpty)
    }
}
