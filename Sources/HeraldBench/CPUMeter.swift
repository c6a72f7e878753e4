/// CPU used over a window by the load generator (workers and coordinator), the server
/// under test, the rest of its stack (Kafka, etcd, ...), and the machine as a whole.
struct CPUMeter: Sendable {
    let serverPids: [Int32]
    let infraPids: [Int32]
    let loadgen: LoadGenerator

    struct Sample: Sendable {
        var wall: UInt64
        var loadgen: UInt64
        var server: UInt64
        var infra: UInt64
        var machineBusy: UInt64
    }

    func sample() async throws -> Sample {
        let workers = try await loadgen.cpuNanos()
        return Sample(
            wall: MonotonicClock.nanos(), loadgen: workers + OwnCPU.nanos(),
            server: serverPids.compactMap(ProcFS.cpuNanos(pid:)).reduce(0, +),
            infra: infraPids.compactMap(ProcFS.cpuNanos(pid:)).reduce(0, +), machineBusy: ProcFS.machineCPU().busy)
    }

    func figures(from a: Sample, to b: Sample) -> CPUFigures {
        let seconds = Double(b.wall &- a.wall) / 1e9
        func cores(_ x: UInt64, _ y: UInt64) -> Double { seconds > 0 && y >= x ? Double(y - x) / 1e9 / seconds : 0 }
        return CPUFigures(
            seconds: seconds, loadgenCores: cores(a.loadgen, b.loadgen), serverCores: cores(a.server, b.server),
            infraCores: cores(a.infra, b.infra), machineCores: cores(a.machineBusy, b.machineBusy), cores: ProcFS.cores)
    }
}

/// CPU over one measured window, in cores (CPU seconds per second).
struct CPUFigures: Codable, Sendable {
    var seconds: Double
    var loadgenCores: Double
    var serverCores: Double
    /// Kafka (Tansu and its adapter), etcd and the cluster's nginx, when measuring the cluster.
    var infraCores: Double
    /// Busy time of the whole machine.
    var machineCores: Double
    var cores: Int

    /// Who limits this figure. A publisher behind its schedule: the server, when its slow
    /// answers kept every publisher connection busy (rate × mean answer time near the pool
    /// size), else the load generator. Otherwise, when the machine is saturated, the side
    /// using more CPU; when it is not, neither is CPU-bound (the figure is the offered load,
    /// or the limit is latency, locks or I/O).
    func bottleneck(publisher: PublishReport? = nil, rate: Double = 0, connections: Int = 0) -> String {
        let saturated = machineCores >= 0.85 * Double(cores)
        if let publisher, publisher.lag.millis(atPercentile: 99) > 5 {
            let lag = String(format: "%.0f", publisher.lag.millis(atPercentile: 99))
            let inFlight = rate * publisher.ack.summary.mean / 1000
            if inFlight >= 0.8 * Double(connections) {
                return "server (slow publish answers held all \(connections) publisher connections; publisher \(lag) ms behind at p99)"
            }
            if !saturated || loadgenCores >= serverCores + infraCores {
                return "load generator (publisher \(lag) ms behind schedule at p99)"
            }
        }
        guard saturated else { return "none (CPU not saturated)" }
        return loadgenCores >= serverCores + infraCores ? "load generator (CPU)" : "server (CPU)"
    }
}
