import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a send
/// time stamped by the publisher and a receive time taken by a worker process compare.
enum MonotonicClock {
    static func nanos() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// CPU time this process has used (user + system), from getrusage.
enum OwnCPU {
    static func nanos() -> UInt64 {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func ns(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_usec) * 1000 }
        return ns(usage.ru_utime) + ns(usage.ru_stime)
    }

    /// Resident set size of this process in bytes (VmRSS).
    static func rssBytes() -> UInt64 { ProcFS.rssBytes(pid: getpid()) ?? 0 }
}

/// Other processes' memory and CPU, read from /proc (Linux).
enum ProcFS {
    private static let ticksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))

    static func read(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8)
    }

    /// VmRSS from /proc/<pid>/status, in bytes; nil when the process is gone.
    static func rssBytes(pid: Int32) -> UInt64? {
        guard let status = read("/proc/\(pid)/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kib = UInt64(fields[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }

    /// Proportional set size from /proc/<pid>/smaps_rollup, in bytes: shared pages (nginx's
    /// shared memory, say) divided among the processes that map them.
    static func pssBytes(pid: Int32) -> UInt64? {
        guard let rollup = read("/proc/\(pid)/smaps_rollup") else { return nil }
        for line in rollup.split(separator: "\n") where line.hasPrefix("Pss:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kib = UInt64(fields[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }

    /// utime + stime of a process from /proc/<pid>/stat, in nanoseconds.
    static func cpuNanos(pid: Int32) -> UInt64? {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        return (user + system) * 1_000_000_000 / ticksPerSecond
    }

    /// Busy and total CPU time of the whole machine (all cores), in nanoseconds, from /proc/stat.
    static func machineCPU() -> (busy: UInt64, total: UInt64) {
        guard let stat = read("/proc/stat"), let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ") else {
            return (0, 0)
        }
        let values = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().compactMap { UInt64($0) }
        guard values.count >= 5 else { return (0, 0) }
        let total = values.prefix(8).reduce(0, +)
        let idle = values[3] + values[4]  // idle + iowait
        return ((total - idle) * 1_000_000_000 / ticksPerSecond, total * 1_000_000_000 / ticksPerSecond)
    }

    static var cores: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}
