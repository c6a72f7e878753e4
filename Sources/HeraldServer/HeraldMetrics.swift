import HeraldCore
import Synchronization
import Metrics
import Prometheus

/// The node's metrics, registered on its own Prometheus registry (no global bootstrap, so
/// several nodes can live in one process).
struct HeraldMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let connections: Metrics.Meter
    let apiCalls: Metrics.Counter
    let framesSent: Metrics.Counter
    let refusedConnections: Metrics.Counter
    let slowConsumerCloses: Metrics.Counter
    /// Reconnects that resumed (`resumed: true`), and those answered `resumed: false`.
    let resumes: Metrics.Counter
    let resumesRefused: Metrics.Counter
    let idleCloses: Metrics.Counter
    let messagesPublished: Metrics.Counter
    /// Clients closed for breaking RFC 6455 or sending frames too fast (1002, 1007, 1008, 1009).
    let protocolErrorCloses: Metrics.Counter
    /// TCP connections refused at the open-connection cap, and HTTP connections cut by a timeout.
    let connectionsOverCap: Metrics.Counter
    let httpTimeouts: Metrics.Counter
    /// Open TCP connections (HTTP and WebSocket).
    let openConnections: Metrics.Meter

    init() {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        self.registry = registry
        connections = Metrics.Meter(label: "herald_connections", factory: factory)
        apiCalls = Metrics.Counter(label: "herald_api_calls_total", factory: factory)
        framesSent = Metrics.Counter(label: "herald_frames_sent_total", factory: factory)
        refusedConnections = Metrics.Counter(label: "herald_refused_connections_total", factory: factory)
        slowConsumerCloses = Metrics.Counter(label: "herald_slow_consumer_closes_total", factory: factory)
        resumes = Metrics.Counter(label: "herald_resumes_total", factory: factory)
        resumesRefused = Metrics.Counter(label: "herald_resumes_refused_total", factory: factory)
        idleCloses = Metrics.Counter(label: "herald_idle_closes_total", factory: factory)
        messagesPublished = Metrics.Counter(label: "herald_messages_published_total", factory: factory)
        protocolErrorCloses = Metrics.Counter(label: "herald_protocol_error_closes_total", factory: factory)
        connectionsOverCap = Metrics.Counter(label: "herald_connections_over_cap_total", factory: factory)
        httpTimeouts = Metrics.Counter(label: "herald_http_timeouts_total", factory: factory)
        openConnections = Metrics.Meter(label: "herald_open_connections", factory: factory)
    }

    func exposition() -> String {
        registry.emitToString()
    }

    /// Counters kept by HeraldCore (which has no metrics dependency), appended to the exposition.
    static func coreCounters(_ delivery: Delivery) -> String {
        """
        # TYPE herald_presence_shed_total counter
        herald_presence_shed_total \(delivery.shedAnnouncements.load(ordering: .relaxed))
        # TYPE herald_binds_refused_total counter
        herald_binds_refused_total \(delivery.refusedBinds.load(ordering: .relaxed))
        # TYPE herald_lifecycle_dropped_total counter
        herald_lifecycle_dropped_total \(delivery.lifecycle?.droppedEvents ?? 0)

        """
    }
}
