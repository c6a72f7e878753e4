/// The server under test as the load generator sees it: where clients subscribe, how a
/// message is published to one client or to everyone in a group, and what counts as success.
protocol PushTarget: Sendable {
    /// "herald" or "nchan".
    var kind: String { get }
    /// Herald greets each client with its ID; Nchan says nothing.
    var expectWelcome: Bool { get }
    /// How often an idle client must send something to stay connected (0: never).
    var keepaliveSeconds: Double { get }

    /// Once per server, before any client connects.
    func prepare(_ http: HTTPClientPool) async throws
    /// The subscribe path for client `{i}` when every client has its own address.
    var unicastPath: String { get }
    /// The subscribe path for a member of the fan-out group.
    var groupPath: String { get }
    /// Makes the connected clients members of the group; returns how many joined.
    func join(clientIds: [String], http: HTTPClientPool, concurrency: Int) async throws -> (
        joined: Int, errors: [String]
    )
    /// Frames the members receive while the group fills (Herald's presence announcements).
    func presenceFrames(joined: Int) -> UInt64
    func publish(toClient index: Int, clientIds: [String], data: @escaping @Sendable (UInt64) -> String)
        -> PublishRequest
    func publishToGroup(data: @escaping @Sendable (UInt64) -> String) -> PublishRequest
    func accepts(_ answer: HTTPAnswer) -> Bool
}

/// Herald: a registered system, clients at /ws, the go-websocket API.
struct HeraldTarget: PushTarget {
    /// How the fan-out group is made.
    enum FanoutVia: String, Sendable {
        /// `bind_to_group` each member, `send_to_group`: the issue's scenario. Each bind
        /// announces the newcomer to every member (presence), N² frames to fill the group.
        case group
        /// The members are the only clients of their own system and the publisher uses
        /// `send_to_system`: the same fan-out delivery (one encoded frame pushed to every
        /// member) without binds, so without presence.
        case system
    }

    var systemId = "bench"
    var fanoutSystemId = "bench-fanout"
    var groupName = "fanout"
    var fanoutVia = FanoutVia.group
    /// The server announces joins to members (`--group-presence true`, its default).
    var presence = true
    var adminToken: String?
    var keepaliveSeconds = 20.0

    var kind: String { "herald" }
    var expectWelcome: Bool { true }
    var unicastPath: String { "/ws?systemId=\(systemId)" }
    var groupPath: String { fanoutVia == .system ? "/ws?systemId=\(fanoutSystemId)" : unicastPath }

    func prepare(_ http: HTTPClientPool) async throws {
        var headers: [(String, String)] = []
        if let adminToken { headers.append(("Authorization", "Bearer \(adminToken)")) }
        for systemId in [systemId, fanoutSystemId] {
            let answer = try await http.send(
                PublishRequest(path: "/api/register", headers: headers, body: { _ in #"{"systemId":"\#(systemId)"}"# }))
            // 4090: registered already (a cluster keeps its systems in etcd).
            guard accepts(answer) || answer.body.contains(#""code":4090"#) else {
                throw HarnessError("register \(systemId): HTTP \(answer.status) \(answer.body.prefix(300))")
            }
        }
    }

    func join(clientIds: [String], http: HTTPClientPool, concurrency: Int) async throws -> (
        joined: Int, errors: [String]
    ) {
        guard fanoutVia == .group else { return (0, []) }
        let ids = clientIds.filter { !$0.isEmpty }
        let next = Shared(0)
        let outcome = Shared((joined: 0, errors: [String]()))
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<max(1, concurrency) {
                tasks.addTask {
                    while true {
                        let k = next.withLock { n in
                            defer { n += 1 }
                            return n
                        }
                        guard k < ids.count else { return }
                        let body = #"{"clientId":"\#(ids[k])","groupName":"\#(groupName)"}"#
                        let request = PublishRequest(path: "/api/bind_to_group", headers: headers, body: { _ in body })
                        do {
                            let answer = try await http.send(request)
                            outcome.withLock { o in
                                if accepts(answer) {
                                    o.joined += 1
                                } else if o.errors.count < 5 {
                                    o.errors.append("bind: HTTP \(answer.status) \(answer.body.prefix(200))")
                                }
                            }
                        } catch {
                            outcome.withLock { o in if o.errors.count < 5 { o.errors.append("bind: \(error)") } }
                        }
                    }
                }
            }
        }
        return outcome.value
    }

    private var headers: [(String, String)] { [("SystemId", systemId)] }

    /// The k-th bind announces the newcomer to all k members, itself included.
    func presenceFrames(joined: Int) -> UInt64 {
        fanoutVia == .group && presence ? UInt64(joined) * UInt64(joined + 1) / 2 : 0
    }

    func publish(toClient index: Int, clientIds: [String], data: @escaping @Sendable (UInt64) -> String)
        -> PublishRequest
    {
        let prefix = #"{"clientId":"\#(clientIds[index])","msg":"bench","data":""#
        return PublishRequest(path: "/api/send_to_client", headers: headers, body: { prefix + data($0) + #""}"# })
    }

    func publishToGroup(data: @escaping @Sendable (UInt64) -> String) -> PublishRequest {
        if fanoutVia == .system {
            return PublishRequest(
                path: "/api/send_to_system", headers: [("SystemId", fanoutSystemId)],
                body: { #"{"msg":"bench","data":""# + data($0) + #""}"# })
        }
        let prefix = #"{"groupName":"\#(groupName)","msg":"bench","data":""#
        return PublishRequest(path: "/api/send_to_group", headers: headers, body: { prefix + data($0) + #""}"# })
    }

    func accepts(_ answer: HTTPAnswer) -> Bool {
        answer.status == 200 && answer.body.contains(#""code":0"#)
    }
}

/// Nchan on nginx: a channel per client (`/sub?id=u<i>`), one channel for the group
/// (`/sub?id=fanout`), publishing by POST to `/pub?id=<channel>`.
struct NchanTarget: PushTarget {
    var kind: String { "nchan" }
    var expectWelcome: Bool { false }
    var keepaliveSeconds: Double { 0 }
    var unicastPath: String { "/sub?id=u{i}" }
    var groupPath: String { "/sub?id=fanout" }

    func prepare(_ http: HTTPClientPool) async throws {}

    func join(clientIds: [String], http: HTTPClientPool, concurrency: Int) async throws -> (
        joined: Int, errors: [String]
    ) {
        (0, [])  // subscribing to the channel is the membership
    }

    func presenceFrames(joined: Int) -> UInt64 { 0 }

    func publish(toClient index: Int, clientIds: [String], data: @escaping @Sendable (UInt64) -> String)
        -> PublishRequest
    {
        PublishRequest(path: "/pub?id=u\(index)", body: { #"{"msg":"bench","data":""# + data($0) + #""}"# })
    }

    func publishToGroup(data: @escaping @Sendable (UInt64) -> String) -> PublishRequest {
        PublishRequest(path: "/pub?id=fanout", body: { #"{"msg":"bench","data":""# + data($0) + #""}"# })
    }

    func accepts(_ answer: HTTPAnswer) -> Bool {
        (200..<300).contains(answer.status)
    }
}
