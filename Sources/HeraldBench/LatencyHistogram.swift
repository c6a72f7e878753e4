import Histogram

/// An HdrHistogram of latencies in microseconds (1 µs to 10 minutes, three significant
/// digits). Workers send theirs as sparse (value, count) pairs; the coordinator merges them.
struct LatencyHistogram: Sendable {
    static let highestMicros: UInt64 = 600_000_000

    private(set) var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: LatencyHistogram.highestMicros,
        numberOfSignificantValueDigits: .three)

    var count: UInt64 { histogram.totalCount }

    mutating func record(nanos: UInt64) {
        let micros = min(max(nanos / 1000, 1), Self.highestMicros)
        _ = histogram.record(micros)
    }

    /// (value in µs, count) for every bucket that holds something.
    var sparse: [[UInt64]] {
        histogram.recordedValues().map { [$0.value, UInt64($0.count)] }
    }

    mutating func add(sparse pairs: [[UInt64]]) {
        for pair in pairs where pair.count == 2 && pair[1] > 0 {
            _ = histogram.record(min(max(pair[0], 1), Self.highestMicros), count: pair[1])
        }
    }

    mutating func add(_ other: LatencyHistogram) {
        histogram.add(other.histogram)
    }

    /// Percentile in milliseconds (0 when empty).
    func millis(atPercentile percentile: Double) -> Double {
        guard count > 0 else { return 0 }
        return Double(histogram.valueAtPercentile(percentile)) / 1000
    }

    var summary: LatencySummary {
        LatencySummary(
            count: count,
            p50: millis(atPercentile: 50), p90: millis(atPercentile: 90), p99: millis(atPercentile: 99),
            p999: millis(atPercentile: 99.9), max: count > 0 ? Double(histogram.max) / 1000 : 0,
            mean: count > 0 ? histogram.mean / 1000 : 0)
    }

    /// The cumulative distribution as (milliseconds, fraction at or below) points, dense in the tail.
    var cdf: [[Double]] {
        guard count > 0 else { return [] }
        var points: [[Double]] = []
        for step in histogram.percentiles(ticksPerHalfDistance: 5) {
            let point = [Double(step.value) / 1000, step.percentileLevelIteratedTo / 100]
            if points.last != point { points.append(point) }
        }
        return points
    }
}

/// Latency figures in milliseconds.
struct LatencySummary: Codable, Sendable {
    var count: UInt64
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double
}
