// Keeps one lease alive.

import Logging

/// Keeps a lease alive every ttl/3 until cancelled or the lease is lost. Calls `onLost` once if etcd
/// answers that the lease is gone, or if the TTL passes without a successful keepalive; transient
/// unavailability is retried until then. Cancellation returns without calling `onLost`.
public struct EtcdLeaseKeeper: Sendable {
    public let client: EtcdClient
    public let lease: Int64
    public let ttl: Int64

    public init(client: EtcdClient, lease: Int64, ttl: Int64) {
        self.client = client
        self.lease = lease
        self.ttl = ttl
    }

    public func run(onLost: @Sendable () async -> Void) async {
        let clock = ContinuousClock()
        let ttlDuration = Duration.seconds(max(ttl, 1))
        let interval = ttlDuration / 3
        let retryDelay = min(interval, .milliseconds(500))
        // The lease was granted (or kept alive) just before we were asked to keep it.
        var expiresAt = clock.now + ttlDuration
        var nextAttempt = clock.now + interval
        let logger = client.logger
        while true {
            do {
                try await Task.sleep(until: nextAttempt, clock: clock)
            } catch {
                return
            }
            let sentAt = clock.now
            do {
                guard let remaining = try await client.keepAliveOnce(lease: lease) else {
                    if Task.isCancelled { return }
                    logger.warning("etcd lease gone", metadata: ["lease": "\(lease)"])
                    await onLost()
                    return
                }
                expiresAt = sentAt + .seconds(remaining)
                nextAttempt = sentAt + min(interval, .seconds(remaining) / 3)
            } catch {
                if Task.isCancelled { return }
                let now = clock.now
                if now >= expiresAt {
                    logger.warning(
                        "etcd lease expired without a successful keepalive",
                        metadata: ["lease": "\(lease)", "error": "\(error)"])
                    await onLost()
                    return
                }
                logger.info("etcd keepalive failed, retrying", metadata: ["lease": "\(lease)", "error": "\(error)"])
                nextAttempt = min(now + retryDelay, expiresAt)
            }
        }
    }
}
