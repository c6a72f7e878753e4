/// A process the meter watches, by the name the report shows.
struct WatchedProcess: Sendable {
    var name: String
    var pid: Int32

    /// "name=pid" or a bare pid (named after the list and its position).
    static func list(_ text: String, defaultName: String) -> [WatchedProcess] {
        text.split(separator: ",").enumerated().compactMap { i, item in
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, let pid = Int32(parts[1]) { return WatchedProcess(name: parts[0], pid: pid) }
            return Int32(parts[0]).map { WatchedProcess(name: "\(defaultName)\(i + 1)", pid: $0) }
        }
    }
}

/// CPU used over a window by the load generator (workers and coordinator), the server
/// under test, the rest of its stack (Kafka, etcd, ...), and the machine as a whole.
struct CPUMeter: Sendable {
    let server: [WatchedProcess]
    let infra: [WatchedProcess]
    let loadgen: LoadGenerator

    struct Sample: Sendable {
        var wall: UInt64
        var loadgen: UInt64
        var processes: [String: UInt64]
        var machineBusy: UInt64
    }

    func sample() async throws -> Sample {
        let workers = try await loadgen.cpuNanos()
        var processes: [String: UInt64] = [:]
        for process in server + infra {
            processes[process.name] = ProcFS.cpuNanos(pid: process.pid) ?? 0
        }
        return Sample(
            wall: MonotonicClock.nanos(), loadgen: workers + OwnCPU.nanos(), processes: processes,
            machineBusy: ProcFS.machineCPU().busy)
    }

    func figures(from a: Sample, to b: Sample) -> CPUFigures {
        let seconds = Double(b.wall &- a.wall) / 1e9
        func cores(_ x: UInt64, _ y: UInt64) -> Double { seconds > 0 && y >= x ? Double(y - x) / 1e9 / seconds : 0 }
        var byProcess: [String: Double] = [:]
        for (name, end) in b.processes { byProcess[name] = cores(a.processes[name] ?? end, end) }
        let serverCores = server.reduce(0) { $0 + (byProcess[$1.name] ?? 0) }
        let infraCores = infra.reduce(0) { $0 + (byProcess[$1.name] ?? 0) }
        return CPUFigures(
            seconds: seconds, loadgenCores: cores(a.loadgen, b.loadgen), serverCores: serverCores,
            infraCores: infraCores,
            machineCores: cores(a.machineBusy, b.machineBusy), cores: ProcFS.cores, byProcess: byProcess)
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
    /// Each watched server and infrastructure process.
    var byProcess: [String: Double]

    /// Whatever else ran on the machine meanwhile (other people's builds and tests, the kernel's
    /// own threads), as far as the figures tell.
    var otherCores: Double { max(0, machineCores - loadgenCores - serverCores - infraCores) }

    /// Who limits this figure. When the machine is saturated (85% of its cores busy), the side
    /// that used more CPU, load generator or server (with its Kafka and etcd). Otherwise, a
    /// publisher that missed its rate (under 95%) was held up by the server when its sends
    /// waited for one of the publisher's connections (all busy waiting for answers), else by
    /// itself; and when it kept its rate, neither is CPU-bound (the figure is the offered
    /// load, or the limit is latency, locks or I/O).
    func bottleneck(publisher: PublishReport? = nil, rate: Double = 0, connections: Int = 0) -> String {
        let saturated = machineCores >= 0.85 * Double(cores)
        var note = ""
        if let publisher, publisher.sendRate < 0.95 * rate {
            note += String(format: "; publisher reached %.0f/s", publisher.sendRate)
            if publisher.waitedForConnection * 100 > publisher.attempted {
                note +=
                    ", \(publisher.waitedForConnection) of \(publisher.attempted) sends waited for one of its \(connections) connections"
            }
        }
        if otherCores > 0.25 { note += String(format: "; other processes used %.2f cores", otherCores) }
        if saturated {
            return (loadgenCores >= serverCores + infraCores ? "load generator (CPU)" : "server (CPU)") + note
        }
        if let publisher, publisher.sendRate < 0.95 * rate {
            let heldUp = publisher.waitedForConnection * 100 > publisher.attempted
            return (heldUp ? "server (slow answers)" : "load generator (publisher)") + note
        }
        return "none (CPU not saturated)" + note
    }
}
