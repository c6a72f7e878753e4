/// Herald's keys in etcd, all under one root (`--etcd-prefix`, `/herald/` by default):
///
/// - `<root>slots/<n>`: slot n is held; its create revision is the holder's epoch (leased);
/// - `<root>nodes/<nodeId>`: a live node's record (JSON `NodeRecord`, leased);
/// - `<root>systems/<systemId>`: a registered system (JSON `SystemRecord`, no lease);
/// - `<root>idempotency/<systemId>/<sha256 of route and key>`: a shared Idempotency-Key record;
/// - `<root>lost/<nodeId>/<epoch>`: who reports the clients of that node's epoch as `node_lost`
///   (docs/lifecycle.md): `reporting <node>` under the reporter's lease while it works, then
///   `reported <node> <count>` under a lease of a day (a node that shut down cleanly writes
///   `reported` for itself), so exactly one survivor reports each dead node;
/// - `<root>log-generation`: written once each time a node finds Herald's topics gone from the
///   broker (and creates them again); its mod revision is the generation of the Kafka log.
///
/// Nothing else writes or parses these names.
public struct EtcdKeys: Sendable, Hashable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// What a key under the root names.
    public enum Parsed: Equatable {
        case slot(UInt32)
        case node(String)
        case system(String)
        case logGeneration
        case other
    }

    var slots: String { root + "slots/" }
    var nodes: String { root + "nodes/" }
    var systems: String { root + "systems/" }
    var idempotency: String { root + "idempotency/" }
    var logGeneration: String { root + "log-generation" }
    var lostReports: String { root + "lost/" }

    func slot(_ slot: UInt32) -> String { slots + String(slot) }
    func node(_ nodeId: String) -> String { nodes + nodeId }
    func system(_ systemId: String) -> String { systems + systemId }
    func lostReport(nodeId: String, epoch: UInt64) -> String { lostReports + nodeId + "/" + String(epoch) }
    func idempotency(systemId: String, digestHex: String) -> String { idempotency + systemId + "/" + digestHex }

    public func parse(_ key: String) -> Parsed {
        if key.hasPrefix(slots), let slot = UInt32(key.dropFirst(slots.count)) { return .slot(slot) }
        if key.hasPrefix(nodes) { return .node(String(key.dropFirst(nodes.count))) }
        if key.hasPrefix(systems) { return .system(String(key.dropFirst(systems.count))) }
        if key == logGeneration { return .logGeneration }
        return .other
    }
}
