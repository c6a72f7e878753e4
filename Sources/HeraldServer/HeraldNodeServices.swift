import Crypto
import Foundation
import HeraldCore
import Hummingbird
import Logging
import Synchronization

/// The parts of one node that routes share: domain objects, limits, metrics.
final class HeraldNodeServices: Sendable {
    let configuration: HeraldConfiguration
    let logger: Logger
    let registry: ConnectionRegistry
    let membership: any Membership
    let router: MessageRouter
    let delivery: Delivery
    let journal: MessageJournal
    let trace: any TraceRecorder
    let systems: any SystemDirectory
    let tokens: TokenVerifier
    let rateLimiter: RateLimiter
    let idempotency = IdempotencyCache<APIAnswer>()
    let metrics = HeraldMetrics()
    private let draining = Atomic<Bool>(false)
    let serials = Atomic<UInt64>(0)
    private let adminTokenDigest: SHA256.Digest?

    /// A standalone node: in-process bus, in-memory journal, trace and system directory.
    init(configuration: HeraldConfiguration, codec: ClientIDCodec, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let nodeId = configuration.nodeId ?? "standalone-\(configuration.advertisedAddress)"
        let membership = StandaloneMembership(nodeId: nodeId, address: configuration.advertisedAddress)
        let registry = ConnectionRegistry()
        let trace = InMemoryTrace(capacity: configuration.traceCapacity)
        let journal = MessageJournal(capacity: configuration.journalCapacity)
        let delivery = Delivery(registry: registry, identity: membership.local, trace: trace)
        let bus = LocalBus(journal: journal, delivery: delivery, slot: membership.local.slot)
        self.registry = registry
        self.membership = membership
        self.trace = trace
        self.journal = journal
        self.delivery = delivery
        self.router = MessageRouter(codec: codec, membership: membership, bus: bus, registry: registry, trace: trace)
        self.systems = InMemorySystemDirectory()
        self.tokens = TokenVerifier(codec: codec)
        self.rateLimiter = RateLimiter(perSecond: configuration.rateLimit)
        self.adminTokenDigest = configuration.adminToken.flatMap { $0.isEmpty ? nil : SHA256.hash(data: Data($0.utf8)) }
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func startDraining() { draining.store(true, ordering: .relaxed) }

    var isReady: Bool { !isDraining && membership.isReady }

    /// Whether the request carries the admin token. Compared as digests, in constant time.
    func isAdmin(_ request: Request) -> Bool {
        guard let expected = adminTokenDigest else { return configuration.dev }
        guard let token = request.bearerToken else { return false }
        let given = SHA256.hash(data: Data(token.utf8))
        return zip(expected, given).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
