import Foundation
import HeraldTestSupport
import Testing

/// Replay and trace of what the fabric carried, read back from Kafka: `herald replay`, `herald trace`
/// and `herald nodes` run as processes against the local cluster, and the same through `/admin/*`.
/// Each test uses a fresh system and filters by it (and by a time a few seconds before it started),
/// so traffic of other tests never matches.
extension ClusterSuite {
    @Suite("Replay and trace")
    struct ReplayTests {
        // MARK: Replay

        @Test("replay returns what a system was sent, oldest first, with placement; CLI and GET /admin/replay agree")
        func replayExactSet() async throws {
            let mix = try await Mix.send()
            let nodes = try await liveNodes()
            let cli = try await HeraldCLI.replay(["--system", mix.system.id, "--since", stamp(mix.start)])
            #expect(cli.status == 0 && !cli.timedOut, "\(cli)")
            let records = cli.records
            #expect(records.count == cli.lines.count, "every stdout line is one JSON object: \(cli)")

            let pushes = records.filter { pushKinds.contains($0["kind"]?.string ?? "") }
            #expect(pushes.map { $0["messageId"]?.string ?? "?" } == mix.sent.map(\.id), "\(cli)")
            #expect(pushes.map { $0["kind"]?.string ?? "?" } == mix.sent.map(\.kind), "\(cli)")
            #expect(pushes.map { $0["target"]?.string ?? "?" } == mix.sent.map(\.target), "\(cli)")
            #expect(pushes.map { $0["payload"]?["msg"]?.string ?? "?" } == mix.sent.map(\.msg), "\(cli)")
            for (record, sent) in zip(pushes, mix.sent) {
                let payload = record["payload"]?.object ?? [:]
                for key in ["sendUserId", "code", "msg", "data"] {
                    #expect(payload.keys.contains(key), "payload lacks \(key): \(record)")
                }
                #expect(record["payload"]?["data"]?["n"]?.int == sent.n, "payload.data: \(record)")
                if sent.kind == "unicast" {
                    #expect(record["topic"]?.string == "herald.unicast", "\(record)")
                    // Unicast goes to the owner's partition: the slot of the node the client is on.
                    #expect(
                        record["partition"]?.int != nil && record["partition"]?.int == nodes[sent.node]?["slot"]?.int,
                        "a unicast to a client of \(sent.node) lies in that node's slot: \(record)")
                } else {
                    #expect(record["topic"]?.string == "herald.broadcast", "\(record)")
                }
            }

            // The bind of the group member travelled the fabric too, and so did its presence.
            let others = records.filter { !pushKinds.contains($0["kind"]?.string ?? "") }
            let otherKinds = Set(others.compactMap { $0["kind"]?.string })
            #expect(
                otherKinds.isSubset(of: ["bind", "presence"]),
                "only the bind and its presence besides the sends: \(cli)")
            let binds = others.filter { $0["kind"]?.string == "bind" }
            #expect(binds.count == 1 && binds.first?["target"]?.string == mix.c.clientId, "the bind of c: \(cli)")
            #expect(others.contains { $0["kind"]?.string == "presence" }, "a presence record for the join: \(cli)")
            let bindIndex = records.firstIndex { $0["kind"]?.string == "bind" }
            let groupIndex = records.firstIndex { $0["kind"]?.string == "group" }
            if let bindIndex, let groupIndex {
                #expect(bindIndex < groupIndex, "oldest first: the bind came before the group send: \(cli)")
            }

            var previous: Date?
            for record in records {
                #expect(record["systemId"]?.string == mix.system.id, "\(record)")
                #expect(["herald.unicast", "herald.broadcast"].contains(record["topic"]?.string ?? ""), "\(record)")
                #expect(record["partition"]?.int != nil, "partition: \(record)")
                #expect(record["offset"]?.int != nil, "offset: \(record)")
                #expect(record["headers"]?.object != nil, "headers: \(record)")
                #expect(record["messageId"]?.string != nil, "messageId: \(record)")
                let text = record["timestamp"]?.string ?? ""
                let time = parseMillisTimestamp(text)
                #expect(time != nil, "timestamp is RFC 3339 with milliseconds: \(record)")
                if let time {
                    #expect(
                        time >= mix.start.addingTimeInterval(-5) && time <= Date().addingTimeInterval(5), "\(record)")
                    if let previous { #expect(time >= previous, "oldest first: \(cli)") }
                    previous = time
                }
            }

            // The same through any node's HTTP route (with a relative since).
            let (http, lines) = try await httpReplay(LocalCluster.node(3), "systemId=\(mix.system.id)&since=-5m")
            #expect(http.status == 200, "\(http)")
            #expect(http.contentType.contains("application/x-ndjson"), "content type \(http.contentType)")
            #expect(lines.map(placementKey) == records.map(placementKey), "HTTP \(http.body)\nCLI \(cli.stdout)")
            #expect(lines.map { $0["payload"] } == records.map { $0["payload"] })
            try await mix.close()
        }

        @Test("replay filters: client, group, message id and limit, on the CLI and over HTTP")
        func replayFilters() async throws {
            let mix = try await Mix.send()
            let since = stamp(mix.start)
            let ids = mix.sent.map(\.id)
            let toA = mix.sent.filter { $0.target == mix.a.clientId }.map(\.id)
            let groupSend = try #require(mix.sent.first { $0.kind == "group" })
            let systemSend = try #require(mix.sent.first { $0.kind == "system" })

            let byClient = try await HeraldCLI.replay([
                "--system", mix.system.id, "--client-id", mix.a.clientId, "--since", since,
            ])
            #expect(byClient.status == 0, "\(byClient)")
            #expect(byClient.records.map { $0["messageId"]?.string ?? "?" } == toA, "\(byClient)")
            #expect(byClient.records.allSatisfy { $0["target"]?.string == mix.a.clientId }, "\(byClient)")

            let byGroup = try await HeraldCLI.replay([
                "--system", mix.system.id, "--group", mix.group, "--since", since,
            ])
            #expect(byGroup.status == 0, "\(byGroup)")
            #expect(
                byGroup.records.filter { $0["kind"]?.string == "group" }.map { $0["messageId"]?.string ?? "?" }
                    == [groupSend.id], "\(byGroup)")
            #expect(
                !byGroup.records.contains { ["unicast", "system"].contains($0["kind"]?.string ?? "") },
                "a group filter matches no unicast or system send: \(byGroup)")

            // The message filter alone (no system) finds exactly that message.
            let byMessage = try await HeraldCLI.replay(["--message-id", systemSend.id, "--since", since])
            #expect(byMessage.status == 0, "\(byMessage)")
            #expect(byMessage.records.map { $0["messageId"]?.string ?? "?" } == [systemSend.id], "\(byMessage)")
            #expect(byMessage.records.first?["kind"]?.string == "system", "\(byMessage)")
            #expect(byMessage.records.first?["target"]?.string == "*", "\(byMessage)")

            let all = try await HeraldCLI.replay(["--system", mix.system.id, "--since", since])
            let limited = try await HeraldCLI.replay(["--system", mix.system.id, "--since", since, "--limit", "3"])
            #expect(limited.status == 0, "\(limited)")
            #expect(all.records.count > 3, "\(all)")
            #expect(limited.records.map(placementKey) == all.records.prefix(3).map(placementKey), "\(limited)")

            let node = LocalCluster.node(2)
            let sinceQuery = percentEncoded(since)
            let (_, httpClient) = try await httpReplay(
                node, "systemId=\(mix.system.id)&clientId=\(percentEncoded(mix.a.clientId))&since=\(sinceQuery)")
            #expect(httpClient.map { $0["messageId"]?.string ?? "?" } == toA)
            let (_, httpGroup) = try await httpReplay(
                node, "systemId=\(mix.system.id)&groupName=\(percentEncoded(mix.group))&since=\(sinceQuery)")
            #expect(httpGroup.map(placementKey) == byGroup.records.map(placementKey))
            let (_, httpMessage) = try await httpReplay(node, "messageId=\(systemSend.id)&since=\(sinceQuery)")
            #expect(httpMessage.map { $0["messageId"]?.string ?? "?" } == [systemSend.id])
            let (_, httpLimited) = try await httpReplay(
                node, "systemId=\(mix.system.id)&since=\(sinceQuery)&limit=3")
            #expect(httpLimited.map(placementKey) == limited.records.map(placementKey))
            #expect(ids.count == 5)
            try await mix.close()
        }

        @Test("a since/until window between two batches returns only the middle batch")
        func replayWindow() async throws {
            let start = Date().addingTimeInterval(-3)
            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(1)).connect()
            let b = try await system.via(LocalCluster.node(2)).connect()
            func batch(_ number: Int) async throws -> [String] {
                [
                    try await system.via(LocalCluster.node(3)).send(to: a.clientId, ["msg": .string("w\(number)a")]),
                    try await system.via(LocalCluster.node(1)).send(to: b.clientId, ["msg": .string("w\(number)b")]),
                ]
            }
            let first = try await batch(1)
            try await Task.sleep(for: .milliseconds(1200))
            let from = Date()
            try await Task.sleep(for: .milliseconds(300))
            let middle = try await batch(2)
            try await Task.sleep(for: .milliseconds(300))
            let to = Date()
            try await Task.sleep(for: .milliseconds(1200))
            let last = try await batch(3)

            let window = try await HeraldCLI.replay([
                "--system", system.id, "--since", stamp(from), "--until", stamp(to),
            ])
            #expect(window.status == 0, "\(window)")
            #expect(window.records.map { $0["messageId"]?.string ?? "?" } == middle, "\(window)")
            let before = try await HeraldCLI.replay([
                "--system", system.id, "--since", stamp(start), "--until", stamp(from),
            ])
            #expect(before.records.map { $0["messageId"]?.string ?? "?" } == first, "\(before)")
            let everything = try await HeraldCLI.replay(["--system", system.id, "--since", stamp(start)])
            #expect(
                everything.records.map { $0["messageId"]?.string ?? "?" } == first + middle + last, "\(everything)")

            let (http, lines) = try await httpReplay(
                LocalCluster.node(1),
                "systemId=\(system.id)&since=\(percentEncoded(stamp(from)))&until=\(percentEncoded(stamp(to)))")
            #expect(http.status == 200, "\(http)")
            #expect(lines.map { $0["messageId"]?.string ?? "?" } == middle, "\(http)")
            try await a.ws.close()
            try await b.ws.close()
        }

        @Test("--format table prints a header, then one row per match, in the order of the JSON lines")
        func replayTable() async throws {
            let start = Date().addingTimeInterval(-3)
            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(2)).connect()
            let unicast = try await system.via(LocalCluster.node(1)).send(to: a.clientId, ["msg": "table-1"])
            let group = try #require(
                try await system.via(LocalCluster.node(3)).ok(
                    "send_to_group", ["groupName": .string(unique("empty")), "msg": "table-2"])["messageId"]?.string)
            let everyone = try #require(
                try await system.via(LocalCluster.node(2)).ok("send_to_system", ["msg": "table-3"])["messageId"]?.string
            )
            let filters = ["--system", system.id, "--since", stamp(start)]

            let json = try await HeraldCLI.replay(filters)
            #expect(json.records.map { $0["messageId"]?.string ?? "?" } == [unicast, group, everyone], "\(json)")
            let table = try await HeraldCLI.replay(filters + ["--format", "table"])
            #expect(table.status == 0 && !table.timedOut, "\(table)")
            let lines = table.lines
            #expect(lines.count == json.records.count + 1, "a header and one row per match: \(table)")
            if let header = lines.first {
                #expect(JSON.parse(header)?.object == nil, "the table is not JSON: \(header)")
                #expect(![unicast, group, everyone].contains { header.contains($0) }, "header: \(header)")
            }
            for (row, record) in zip(lines.dropFirst(), json.records) {
                #expect(row.contains(record["messageId"]?.string ?? "?"), "row \(row) for \(record)")
                #expect(row.contains(record["kind"]?.string ?? "?"), "row \(row) for \(record)")
            }
            try await a.ws.close()
        }

        @Test("an empty window or a quiet system matches nothing and exits 0 within seconds")
        func replayEmpty() async throws {
            let quiet = try await LocalCluster.registerSystem()
            let none = try await HeraldCLI.replay(["--system", quiet.id, "--since", "-5m"], timeout: .seconds(30))
            #expect(none.status == 0 && !none.timedOut, "\(none)")
            #expect(none.lines.isEmpty, "\(none)")
            #expect(none.elapsed < .seconds(15), "replay of nothing must stop at the end of each partition: \(none)")

            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(1)).connect()
            _ = try await system.via(LocalCluster.node(2)).send(to: a.clientId, ["msg": "not in the window"])
            let future = try await HeraldCLI.replay(
                ["--system", system.id, "--since", stamp(Date().addingTimeInterval(3600))], timeout: .seconds(30))
            #expect(future.status == 0 && !future.timedOut, "\(future)")
            #expect(future.lines.isEmpty, "\(future)")
            #expect(future.elapsed < .seconds(15), "\(future)")
            let past = try await HeraldCLI.replay(
                ["--system", system.id, "--until", stamp(Date().addingTimeInterval(-3600))], timeout: .seconds(30))
            #expect(past.status == 0 && !past.timedOut, "\(past)")
            #expect(past.lines.isEmpty, "\(past)")

            let (http, lines) = try await httpReplay(LocalCluster.node(2), "systemId=\(quiet.id)&since=-5m")
            #expect(http.status == 200, "\(http)")
            #expect(lines.isEmpty && http.body.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(http)")
            try await a.ws.close()
        }

        @Test(
            "a bad filter fails clearly: the CLI exits non-zero naming the option, HTTP answers 4000",
            arguments: BadFilter.all)
        func replayBadFilter(_ bad: BadFilter) async throws {
            let run = try await HeraldCLI.replay(["--system", newSystemId()] + bad.cli, timeout: .seconds(30))
            #expect(!run.timedOut, "\(run)")
            #expect(run.status != 0, "\(run)")
            #expect(run.stderr.localizedCaseInsensitiveContains(bad.field), "stderr should name \(bad.field): \(run)")
            #expect(run.records.isEmpty, "\(run)")

            let node = LocalCluster.node(3)
            expectFailure(
                try await node.api.adminGet("/admin/replay?\(bad.query)"), status: 400, code: 4000, mentions: bad.field)
            expectFailure(
                try await node.api.adminPost("/admin/replay/redeliver?\(bad.query)"), status: 400, code: 4000,
                mentions: bad.field)
        }

        @Test("--redeliver without --etcd, or without the client-ID key, is refused")
        func redeliverNeedsEtcdAndKey() async throws {
            let noEtcd = try await HeraldCLI.replay(
                ["--redeliver", "--client-id-key", HeraldCLI.clientIdKey, "--system", newSystemId(), "--since", "-1m"],
                timeout: .seconds(30))
            #expect(!noEtcd.timedOut && noEtcd.status != 0, "\(noEtcd)")
            #expect(noEtcd.stderr.localizedCaseInsensitiveContains("etcd"), "\(noEtcd)")
            #expect(noEtcd.lines.isEmpty, "\(noEtcd)")
            // Checking that a unicast target's node is alive means opening its client ID.
            let noKey = try await HeraldCLI.replay(
                ["--redeliver", "--etcd", HeraldCLI.etcd, "--system", newSystemId(), "--since", "-1m"],
                timeout: .seconds(30))
            #expect(!noKey.timedOut && noKey.status != 0, "\(noKey)")
            #expect(noKey.stderr.localizedCaseInsensitiveContains("client-id-key"), "\(noKey)")
            #expect(noKey.lines.isEmpty, "\(noKey)")
        }

        // MARK: Redeliver

        @Test("herald replay --redeliver sends a unicast again (redelivered: true) and prints the summary")
        func redeliverUnicastCLI() async throws {
            let start = Date().addingTimeInterval(-3)
            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(1)).connect()
            let b = try await system.via(LocalCluster.node(2)).connect()
            let toA = try await system.via(LocalCluster.node(3)).send(
                to: a.clientId, ["msg": "again", "sendUserId": "ops", "data": ["x": [1, 2]]])
            let toB = try await system.via(LocalCluster.node(3)).send(to: b.clientId, ["msg": "gone"])
            let original = try await nextNonPresence(a.ws)
            #expect(original["messageId"]?.string == toA)
            #expect(original["redelivered"] == nil || original["redelivered"] == false, "\(original)")
            #expect(try await nextNonPresence(b.ws)["messageId"]?.string == toB)

            let run = try await HeraldCLI.replay([
                "--redeliver", "--etcd", HeraldCLI.etcd, "--client-id-key", HeraldCLI.clientIdKey,
                "--system", system.id, "--message-id", toA,
                "--since", stamp(start),
            ])
            #expect(run.status == 0 && !run.timedOut, "\(run)")
            #expect(run.lines.count == 1, "only the summary on stdout: \(run)")
            #expect(run.records.last?["redelivered"]?.int == 1, "\(run)")
            #expect(run.records.last?["skipped"]?.int == 0, "\(run)")
            let again = try await nextNonPresence(a.ws, timeout: .seconds(10))
            #expect(again["messageId"]?.string == toA, "\(again)")
            #expect(again["redelivered"]?.bool == true, "\(again)")
            #expect(again["msg"]?.string == "again" && again["sendUserId"]?.string == "ops", "\(again)")
            #expect(again["data"] == ["x": [1, 2]], "\(again)")
            await #expect(throws: (any Error).self, "redelivered once") {
                _ = try await nextNonPresence(a.ws, timeout: .milliseconds(700))
            }
            let steps = try await traceSteps(toA, on: LocalCluster.node(2)) { steps in
                steps.contains { $0["step"]?.string == "redelivered" }
            }
            #expect(names(steps).contains("redelivered"), "the redelivery is in the trace: \(steps)")

            // For unicast only the owner node is checked (alive, same epoch), not the connection:
            // a client that left since still counts as redelivered, not skipped.
            try await b.ws.close()
            try await waitOffline(system, b.clientId)
            let gone = try await HeraldCLI.replay([
                "--redeliver", "--etcd", HeraldCLI.etcd, "--client-id-key", HeraldCLI.clientIdKey,
                "--system", system.id, "--message-id", toB,
                "--since", stamp(start),
            ])
            #expect(gone.status == 0, "\(gone)")
            #expect(gone.records.last?["redelivered"]?.int == 1, "\(gone)")
            #expect(gone.records.last?["skipped"]?.int == 0, "\(gone)")
            try await a.ws.close()
        }

        @Test("POST /admin/replay/redeliver sends a group message again to its online members")
        func redeliverGroupHTTP() async throws {
            let system = try await LocalCluster.registerSystem()
            let group = unique("rg")
            let first = try await system.via(LocalCluster.node(1)).connect()
            let second = try await system.via(LocalCluster.node(3)).connect()
            try await system.via(LocalCluster.node(2)).bind(first.clientId, group: group)
            try await system.via(LocalCluster.node(2)).bind(second.clientId, group: group)
            try await waitForMembers(system, group, count: 2)
            let message = try #require(
                try await system.via(LocalCluster.balancer).ok(
                    "send_to_group", ["groupName": .string(group), "msg": "grp", "data": 7])["messageId"]?.string)
            for member in [first, second] {
                #expect(try await nextNonPresence(member.ws)["messageId"]?.string == message)
            }

            let answer = try await LocalCluster.node(2).api.adminPost(
                "/admin/replay/redeliver?systemId=\(system.id)&messageId=\(message)&since=-5m")
            expectSuccess(answer)
            #expect(answer.data?["redelivered"]?.int == 1, "\(answer)")
            #expect(answer.data?["skipped"]?.int == 0, "\(answer)")
            for member in [first, second] {
                let again = try await nextNonPresence(member.ws, timeout: .seconds(10))
                #expect(again["messageId"]?.string == message, "\(again)")
                #expect(again["redelivered"]?.bool == true, "\(again)")
                #expect(again["groupName"]?.string == group, "\(again)")
                #expect(again["data"]?.int == 7, "\(again)")
            }
            let steps = try await traceSteps(message, on: LocalCluster.node(1)) { steps in
                steps.contains { $0["step"]?.string == "redelivered" }
            }
            #expect(names(steps).contains("redelivered"), "\(steps)")
            try await first.ws.close()
            try await second.ws.close()
        }

        // MARK: Trace

        @Test("trace of a unicast: accepted and produced by the API node, delivered by the owner, acked; CLI = HTTP")
        func traceUnicast() async throws {
            let start = Date().addingTimeInterval(-3)
            let system = try await LocalCluster.registerSystem()
            let client = try await system.via(LocalCluster.node(1)).connect()
            let message = try await system.via(LocalCluster.node(2)).send(to: client.clientId, ["msg": "trace me"])
            #expect(try await nextNonPresence(client.ws)["messageId"]?.string == message)
            try await client.ws.sendText(#"{"ack":"\#(message)"}"#)

            let steps = try await traceSteps(message, on: LocalCluster.node(3)) { steps in
                Set(names(steps)).isSuperset(of: ["accepted", "produced", "delivered", "acked"])
            }
            let stepNames = names(steps)
            for expected in ["accepted", "produced", "delivered", "acked"] {
                #expect(stepNames.contains(expected), "missing \(expected): \(steps)")
            }
            #expect(!stepNames.contains("dropped"), "\(steps)")
            let order = ["accepted", "produced", "delivered", "acked"].compactMap { stepNames.firstIndex(of: $0) }
            #expect(order == order.sorted(), "steps in the order of the path: \(stepNames)")
            let accepted = steps.first { $0["step"]?.string == "accepted" }
            let produced = steps.first { $0["step"]?.string == "produced" }
            let delivered = steps.first { $0["step"]?.string == "delivered" }
            let acked = steps.first { $0["step"]?.string == "acked" }
            #expect(accepted?["node"]?.string == "node2", "\(steps)")
            #expect(produced?["node"]?.string == "node2", "\(steps)")
            #expect(produced?["topic"]?.string == "herald.unicast", "\(steps)")
            #expect(delivered?["node"]?.string == "node1", "the owner delivers: \(steps)")
            #expect(delivered?["clientId"]?.string == client.clientId, "\(steps)")
            #expect(acked?["node"]?.string == "node1" && acked?["clientId"]?.string == client.clientId, "\(steps)")
            let startMillis = Int(start.timeIntervalSince1970 * 1000)
            let nowMillis = Int(Date().timeIntervalSince1970 * 1000)
            for step in steps {
                let at = step["at"]?.int ?? 0
                #expect(at >= startMillis - 5000 && at <= nowMillis + 5000, "at is ms since the epoch: \(step)")
            }

            // produced names the very record replay finds.
            let replay = try await HeraldCLI.replay(["--message-id", message, "--since", stamp(start)])
            let record = replay.records.first
            #expect(replay.records.count == 1, "\(replay)")
            #expect(record?["topic"]?.string == produced?["topic"]?.string, "\(replay) vs \(steps)")
            #expect(record?["partition"]?.int == produced?["partition"]?.int, "\(replay) vs \(steps)")
            #expect(record?["offset"]?.int == produced?["offset"]?.int, "\(replay) vs \(steps)")
            #expect(produced?["offset"]?.int != nil, "\(steps)")

            let cli = try await HeraldCLI.run(["trace", message, "--kafka", HeraldCLI.kafka])
            #expect(cli.status == 0 && !cli.timedOut, "\(cli)")
            #expect(cli.records.count == 1, "one JSON object: \(cli)")
            let traced = cli.records.first
            #expect(traced?["messageId"]?.string == message, "\(cli)")
            let cliSteps = traced?["steps"]?.array ?? []
            #expect(
                cliSteps.map(\.encoded).sorted() == steps.map(\.encoded).sorted(), "CLI \(cli.stdout)\nHTTP \(steps)")
            try await client.ws.close()
        }

        @Test("trace of group and system sends: one delivered step per node with members, counts add up")
        func traceFanOut() async throws {
            let system = try await LocalCluster.registerSystem()
            let group = unique("tg")
            let members = [
                try await system.via(LocalCluster.node(1)).connect(),
                try await system.via(LocalCluster.node(1)).connect(),
                try await system.via(LocalCluster.node(2)).connect(),
            ]
            let outsider = try await system.via(LocalCluster.node(3)).connect()
            for member in members {
                try await system.via(LocalCluster.node(3)).bind(member.clientId, group: group)
            }
            try await waitForMembers(system, group, count: 3)
            let groupMessage = try #require(
                try await system.via(LocalCluster.node(3)).ok(
                    "send_to_group", ["groupName": .string(group), "msg": "to the group"])["messageId"]?.string)
            let systemMessage = try #require(
                try await system.via(LocalCluster.node(2)).ok("send_to_system", ["msg": "to all"])["messageId"]?.string)

            let expectedGroup = ["node1": 2, "node2": 1]
            let groupSteps = try await traceSteps(groupMessage, on: LocalCluster.node(1)) { steps in
                deliveredCounts(steps) == expectedGroup && Set(names(steps)).isSuperset(of: ["accepted", "produced"])
            }
            #expect(deliveredCounts(groupSteps) == expectedGroup, "\(groupSteps)")
            #expect(
                groupSteps.filter { $0["step"]?.string == "delivered" && ($0["count"]?.int ?? 0) > 0 }.count == 2,
                "one delivered step per node with members: \(groupSteps)")
            let groupAccepted = groupSteps.first { $0["step"]?.string == "accepted" }
            let groupProduced = groupSteps.first { $0["step"]?.string == "produced" }
            #expect(groupAccepted?["node"]?.string == "node3", "\(groupSteps)")
            #expect(groupProduced?["topic"]?.string == "herald.broadcast", "\(groupSteps)")
            #expect(groupProduced?["partition"]?.int != nil && groupProduced?["offset"]?.int != nil, "\(groupSteps)")

            let expectedSystem = ["node1": 2, "node2": 1, "node3": 1]
            let systemSteps = try await traceSteps(systemMessage, on: LocalCluster.node(3)) { steps in
                deliveredCounts(steps) == expectedSystem && Set(names(steps)).isSuperset(of: ["accepted", "produced"])
            }
            #expect(deliveredCounts(systemSteps) == expectedSystem, "\(systemSteps)")
            #expect(
                systemSteps.first { $0["step"]?.string == "accepted" }?["node"]?.string == "node2", "\(systemSteps)")
            for client in members + [outsider] { try await client.ws.close() }
        }

        @Test("a send to a client that just disconnected from a live node answers 0 and is traced dropped: offline")
        func traceDroppedOffline() async throws {
            let system = try await LocalCluster.registerSystem()
            let client = try await system.via(LocalCluster.node(3)).connect()
            try await client.ws.close()
            try await waitOffline(system.via(LocalCluster.node(1)), client.clientId)
            let answer = try await system.via(LocalCluster.node(1)).call(
                "send_to_client", ["clientId": .string(client.clientId), "msg": "too late"])
            expectSuccess(answer)
            let message = try #require(answer.data?["messageId"]?.string, "\(answer)")

            let steps = try await traceSteps(message, on: LocalCluster.node(2)) { steps in
                Set(names(steps)).isSuperset(of: ["accepted", "produced", "dropped"])
            }
            let dropped = steps.first { $0["step"]?.string == "dropped" }
            #expect(dropped?["reason"]?.string == "offline", "\(steps)")
            #expect(dropped?["node"]?.string == "node3", "the owner drops it: \(steps)")
            #expect(!names(steps).contains("delivered"), "\(steps)")
            #expect(steps.first { $0["step"]?.string == "accepted" }?["node"]?.string == "node1", "\(steps)")
            #expect(names(steps).contains("produced"), "\(steps)")

            let cli = try await HeraldCLI.run(["trace", message, "--kafka", HeraldCLI.kafka])
            #expect(cli.status == 0, "\(cli)")
            let cliDropped = cli.records.first?["steps"]?.array?.first { $0["step"]?.string == "dropped" }
            #expect(cliDropped?["reason"]?.string == "offline", "\(cli)")
        }

        @Test("trace of an unknown message id: the CLI exits non-zero with 'no record', HTTP answers 404 / 4044")
        func traceUnknown() async throws {
            let unknown = (0..<28).map { _ in String("0123456789abcdef".randomElement()!) }.joined()
            let cli = try await HeraldCLI.run(["trace", unknown, "--kafka", HeraldCLI.kafka])
            #expect(!cli.timedOut && cli.status != 0, "\(cli)")
            #expect(cli.stderr.localizedCaseInsensitiveContains("no record"), "\(cli)")
            #expect(cli.records.isEmpty, "\(cli)")
            for node in LocalCluster.nodes {
                expectFailure(try await node.api.adminGet("/admin/trace/\(unknown)"), status: 404, code: 4044)
            }
        }

        // MARK: Nodes

        @Test("herald nodes --etcd lists node1..node3 with their address, slot and epoch")
        func nodesFromEtcd() async throws {
            let run = try await HeraldCLI.run(["nodes", "--etcd", HeraldCLI.etcd], timeout: .seconds(30))
            #expect(run.status == 0 && !run.timedOut, "\(run)")
            #expect(run.records.count == run.lines.count, "one JSON object a line: \(run)")
            let listed = Dictionary(
                run.records.compactMap { record in record["nodeId"]?.string.map { ($0, record) } },
                uniquingKeysWith: { first, _ in first })
            #expect(Set(listed.keys) == ["node1", "node2", "node3"], "\(run)")
            let known = try await liveNodes()
            for number in 1...3 {
                let nodeId = "node\(number)"
                let record = listed[nodeId]
                #expect(record?["address"]?.string == "127.0.0.1:\(7800 + number)", "\(run)")
                #expect(record?["slot"]?.int != nil && record?["slot"]?.int == known[nodeId]?["slot"]?.int, "\(run)")
                #expect(record?["epoch"]?.int != nil && record?["epoch"]?.int == known[nodeId]?["epoch"]?.int, "\(run)")
                #expect(record?["connections"]?.int != nil, "\(run)")
                #expect(record?["startedAt"] != nil && record?["startedAt"] != .null, "\(run)")
            }
            let slots = run.records.compactMap { $0["slot"]?.int }
            #expect(Set(slots).count == 3, "each node holds its own slot: \(run)")
        }
    }
}

// MARK: - Helpers

private let pushKinds: Set<String> = ["unicast", "group", "system"]

/// One send of a mix: what replay must show for it.
private struct Sent: Sendable {
    var id: String
    var kind: String
    var target: String
    var msg: String
    var n: Int
    /// The node whose client it was for (unicast).
    var node: String
}

/// Clients on all three nodes, one of them in a group, and five sends over time: unicasts to clients
/// on different nodes, a group send and a system send, through different nodes.
private struct Mix: Sendable {
    var system: TestSystem
    var start: Date
    var a: ConnectedClient
    var b: ConnectedClient
    var c: ConnectedClient
    var group: String
    var sent: [Sent]

    static func send() async throws -> Mix {
        let start = Date().addingTimeInterval(-3)
        let system = try await LocalCluster.registerSystem()
        let tag = unique("mix")
        let a = try await system.via(LocalCluster.node(1)).connect()
        let b = try await system.via(LocalCluster.node(2)).connect()
        let c = try await system.via(LocalCluster.node(3)).connect()
        let group = unique("g")
        try await system.via(LocalCluster.node(1)).bind(c.clientId, group: group, userId: "carol")
        // The bind is applied when its own 1001 arrives.
        expectPresence(try await c.ws.nextJSON(), code: 1001, group: group, clientId: c.clientId)

        var sent: [Sent] = []
        func unicast(_ client: ConnectedClient, on node: String, via sender: Int, _ n: Int) async throws {
            let msg = "\(tag)-\(n)"
            let id = try await system.via(LocalCluster.node(sender)).send(
                to: client.clientId, ["msg": .string(msg), "data": ["n": .number(Double(n))]])
            sent.append(Sent(id: id, kind: "unicast", target: client.clientId, msg: msg, n: n, node: node))
        }
        try await unicast(a, on: "node1", via: 2, 1)
        try await unicast(b, on: "node2", via: 3, 2)
        try await Task.sleep(for: .milliseconds(300))
        let groupMsg = "\(tag)-3"
        let groupId = try #require(
            try await system.via(LocalCluster.balancer).ok(
                "send_to_group", ["groupName": .string(group), "msg": .string(groupMsg), "data": ["n": 3]]
            )["messageId"]?.string)
        sent.append(Sent(id: groupId, kind: "group", target: group, msg: groupMsg, n: 3, node: ""))
        try await Task.sleep(for: .milliseconds(300))
        let systemMsg = "\(tag)-4"
        let systemId = try #require(
            try await system.via(LocalCluster.node(1)).ok(
                "send_to_system", ["msg": .string(systemMsg), "data": ["n": 4]])["messageId"]?.string)
        sent.append(Sent(id: systemId, kind: "system", target: "*", msg: systemMsg, n: 4, node: ""))
        try await Task.sleep(for: .milliseconds(50))
        try await unicast(a, on: "node1", via: 3, 5)

        // The fabric carried each to its clients (group and system sends travel other partitions,
        // so only the sets are compared).
        let ids = sent.map(\.id)
        #expect(try await receive(a.ws, 3) == Set([ids[0], ids[3], ids[4]]))
        #expect(try await receive(b.ws, 2) == Set([ids[1], ids[3]]))
        #expect(try await receive(c.ws, 2) == Set([ids[2], ids[3]]))
        return Mix(system: system, start: start, a: a, b: b, c: c, group: group, sent: sent)
    }

    func close() async throws {
        for client in [a, b, c] { try await client.ws.close() }
    }
}

extension ClusterSuite.ReplayTests {
    /// A bad replay filter: the CLI options, the same as a query, and the option the error must name.
    struct BadFilter: Sendable, CustomTestStringConvertible {
        var name: String
        var cli: [String]
        var query: String
        var field: String

        var testDescription: String { name }

        static let all = [
            BadFilter(
                name: "unparseable since", cli: ["--since", "yesterday"], query: "since=yesterday", field: "since"),
            BadFilter(name: "unparseable until", cli: ["--until", "12:61"], query: "until=12%3A61", field: "until"),
            BadFilter(
                name: "until before since", cli: ["--since", "-1m", "--until", "-2m"], query: "since=-1m&until=-2m",
                field: "until"),
            BadFilter(name: "limit 0", cli: ["--limit", "0"], query: "limit=0", field: "limit"),
        ]
    }
}

/// One finished run of the `herald` executable.
private struct CLIRun: Sendable, CustomStringConvertible {
    var args: [String]
    var status: Int32
    var stdout: String
    var stderr: String
    var stderrTail: String
    var timedOut: Bool
    var elapsed: Duration

    /// Non-empty stdout lines.
    var lines: [String] {
        stdout.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    }

    /// The stdout lines that are JSON objects.
    var records: [JSON] { lines.compactMap { JSON.parse($0) }.filter { $0.object != nil } }

    var description: String {
        "herald \(args.joined(separator: " ")): exit \(status) after \(elapsed)\(timedOut ? " (TIMED OUT)" : "")\n"
            + "--- stdout ---\n\(stdout.prefix(3000))\n--- stderr tail ---\n\(stderrTail)"
    }
}

/// Runs `herald` subcommands as processes: output to temporary files, polled (never
/// `waitUntilExit`, which spins on Linux), terminated when past the deadline.
private enum HeraldCLI {
    static let kafka = "127.0.0.1:9092"
    static let etcd = "http://127.0.0.1:2379"
    /// The cluster's client-ID key (`--redeliver` opens client IDs to find their nodes).
    static let clientIdKey: String = {
        if let key = ProcessInfo.processInfo.environment["HERALD_CLIENT_ID_KEY"], !key.isEmpty { return key }
        let file = LocalCluster.root.appendingPathComponent(".cluster/client-id-key")
        return (try? String(contentsOf: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }()
    /// Settings the CLI would take from the environment: each run gets only what its arguments say.
    static let environment: [String: String] = ProcessInfo.processInfo.environment.filter {
        !["HERALD_KAFKA", "HERALD_ETCD", "HERALD_CLIENT_ID_KEY"].contains($0.key)
    }

    static func replay(_ options: [String], timeout: Duration = .seconds(60)) async throws -> CLIRun {
        try await run(["replay", "--kafka", kafka] + options, timeout: timeout)
    }

    static func run(_ args: [String], timeout: Duration = .seconds(60)) async throws -> CLIRun {
        let directory = FileManager.default.temporaryDirectory
        let tag = UUID().uuidString.prefix(8)
        let outURL = directory.appendingPathComponent("herald-cli-\(tag).stdout")
        let errURL = directory.appendingPathComponent("herald-cli-\(tag).stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HeraldBinary.path)
        process.arguments = args
        process.environment = environment
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let started = ContinuousClock.now
        try process.run()
        let deadline = started + timeout
        var timedOut = false
        while process.isRunning {
            if ContinuousClock.now >= deadline || Task.isCancelled {
                timedOut = true
                process.terminate()
                let grace = ContinuousClock.now + .seconds(5)
                while process.isRunning, ContinuousClock.now < grace {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                while process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
                break
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        let elapsed = ContinuousClock.now - started
        let stdout = String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self)
        let stderr = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
        return CLIRun(
            args: args, status: process.terminationStatus, stdout: stdout, stderr: stderr,
            stderrTail: tailOfFile(errURL, lines: 20), timedOut: timedOut, elapsed: elapsed)
    }
}

/// RFC 3339 with milliseconds, UTC.
private func stamp(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}

/// Parses an RFC 3339 time that carries fractional seconds (nil otherwise).
private func parseMillisTimestamp(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    guard text.contains(".") else { return nil }
    return formatter.date(from: text)
}

/// What identifies a replayed record: kind, message, and where it lies in Kafka.
private func placementKey(_ record: JSON) -> String {
    [
        record["kind"]?.string ?? "?", record["messageId"]?.string ?? "?", record["topic"]?.string ?? "?",
        record["partition"].map(\.encoded) ?? "?", record["offset"].map(\.encoded) ?? "?",
        record["target"]?.string ?? "?", record["timestamp"]?.string ?? "?",
    ].joined(separator: "|")
}

/// GET /admin/replay on a node; the answer and its NDJSON lines (an unparseable line is an issue).
private func httpReplay(_ node: RemoteHerald, _ query: String) async throws -> (APIResponse, [JSON]) {
    let answer = try await node.api.get(
        "/admin/replay?\(query)", headers: node.api.adminHeaders, timeout: .seconds(60))
    let lines = answer.body.split(separator: "\n").map(String.init)
        .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    let records = lines.compactMap { JSON.parse($0) }
    #expect(records.count == lines.count, "every line is JSON: \(answer)")
    return (answer, records)
}

/// The live nodes by id, from /admin/nodes.
private func liveNodes() async throws -> [String: JSON] {
    let answer = try await LocalCluster.balancer.api.adminGet("/admin/nodes")
    guard let nodes = answer.data?.array else {
        throw HeraldLaunchError(description: "/admin/nodes answered \(answer)")
    }
    return Dictionary(
        nodes.compactMap { node in node["nodeId"]?.string.map { ($0, node) } }, uniquingKeysWith: { first, _ in first })
}

/// Reads `count` non-presence frames; their message ids.
private func receive(_ ws: TestWebSocket, _ count: Int) async throws -> Set<String> {
    var ids: Set<String> = []
    for _ in 0..<count {
        ids.insert(try await nextNonPresence(ws)["messageId"]?.string ?? "")
    }
    return ids
}

/// Waits until a group's online list (across nodes) has `count` members: the binds were applied.
private func waitForMembers(_ system: TestSystem, _ group: String, count: Int) async throws {
    _ = try await LocalCluster.eventually("\(count) members in \(group)", timeout: .seconds(10)) {
        try await system.via(LocalCluster.node(2)).ok(
            "get_online_list", ["groupName": .string(group)])["count"]?.int == count
    }
}

/// Polls GET /admin/trace on a node (steps reach herald.events in batches) until `done` holds
/// or ten seconds pass; the steps last seen.
private func traceSteps(
    _ messageId: String, on node: RemoteHerald, _ done: ([JSON]) -> Bool
) async throws -> [JSON] {
    let deadline = ContinuousClock.now + .seconds(10)
    var last: APIResponse?
    while true {
        let answer = try await node.api.adminGet("/admin/trace/\(percentEncoded(messageId))")
        last = answer
        if answer.status == 200, let steps = answer.data?["steps"]?.array, done(steps) {
            expectSuccess(answer)
            #expect(answer.data?["messageId"]?.string == messageId, "\(answer)")
            return steps
        }
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(250))
    }
    Issue.record("the trace of \(messageId) never got there within 10 s: \(last.map { "\($0)" } ?? "no answer")")
    return last?.data?["steps"]?.array ?? []
}

private func names(_ steps: [JSON]) -> [String] {
    steps.compactMap { $0["step"]?.string }
}

/// Delivered counts by node, for the delivered steps that delivered something.
private func deliveredCounts(_ steps: [JSON]) -> [String: Int] {
    var counts: [String: Int] = [:]
    for step in steps where step["step"]?.string == "delivered" {
        let count = step["count"]?.int ?? 0
        if count > 0 { counts[step["node"]?.string ?? "?", default: 0] += count }
    }
    return counts
}

extension ClusterSuite.ReplayTests {
    @Test("replay and trace read the topics a cluster was configured with, and not the default ones")
    func configuredTopics() async throws {
        let tag = UUID().uuidString.prefix(8).lowercased()
        let topics = [
            "--unicast-topic", "herald.unicast.r\(tag)", "--broadcast-topic", "herald.broadcast.r\(tag)",
            "--events-topic", "herald.events.r\(tag)",
        ]
        let node = try await HeraldInstance.start(
            dev: false,
            extraArgs: [
                "--kafka", HeraldCLI.kafka, "--etcd", HeraldCLI.etcd, "--admin-token", LocalCluster.adminToken,
                "--etcd-prefix", "/herald-r\(tag)/", "--kafka-idempotence", "false",
                "--client-id-key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ] + topics, waitForReady: true)
        defer { Task { _ = await node.stop() } }
        let system = try await node.api.registerSystem()
        let client = try await system.via(node).connect()
        let start = Date().addingTimeInterval(-5)
        let message = try await system.via(node).send(to: client.clientId)
        #expect(try await client.ws.nextJSON()["messageId"]?.string == message)

        let found = try await HeraldCLI.replay(["--message-id", message, "--since", stamp(start)] + topics)
        #expect(found.status == 0 && found.records.map { $0["messageId"]?.string } == [message], "\(found)")
        #expect(found.records.first?["topic"]?.string == "herald.unicast.r\(tag)", "\(found)")
        let elsewhere = try await HeraldCLI.replay(["--message-id", message, "--since", stamp(start)])
        #expect(elsewhere.status == 0 && elsewhere.records.isEmpty, "the default topics never carried it: \(elsewhere)")

        // The trace events go to the configured events topic; they arrive a flush later.
        _ = try await LocalCluster.eventually("the trace in the configured events topic", timeout: .seconds(15)) {
            let run = try await HeraldCLI.run(["trace", message, "--kafka", HeraldCLI.kafka] + topics)
            return run.status == 0 && run.records.first?["messageId"]?.string == message
        }
        let traced = try await HeraldCLI.run(["trace", message, "--kafka", HeraldCLI.kafka] + topics)
        let steps = traced.records.first?["steps"]?.array ?? []
        #expect(steps.contains { $0["step"]?.string == "accepted" }, "\(traced)")
        try await client.ws.close()
    }
}
