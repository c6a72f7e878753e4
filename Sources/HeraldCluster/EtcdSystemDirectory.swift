import Foundation
import HeraldCore
import HeraldEtcd

/// Registered systems in etcd (`EtcdKeys.system`), known on every node through the
/// membership's watch; a miss is looked up directly.
public struct EtcdSystemDirectory: SystemDirectory {
    let etcd: EtcdClient
    let membership: ClusterMembership
    let keys: EtcdKeys
    /// Unknown IDs cost one etcd read each: misses are remembered briefly and reads bounded.
    let lookups: SystemLookupGuard

    public func register(_ record: SystemRecord) async throws(HeraldError) {
        do {
            let value = Array(try JSONEncoder().encode(record))
            let (created, _) = try await etcd.createIfAbsent(keys.system(record.systemId), value: value, lease: nil)
            guard created else { throw HeraldError.alreadyRegistered(record.systemId) }
            membership.remember(record)
            lookups.forget(record.systemId)
        } catch let error as HeraldError {
            throw error
        } catch {
            throw .unavailable("etcd: \(error)")
        }
    }

    public func update(_ record: SystemRecord) async throws(HeraldError) {
        do {
            _ = try await etcd.put(keys.system(record.systemId), value: Array(try JSONEncoder().encode(record)))
            membership.remember(record)
        } catch {
            throw .unavailable("etcd: \(error)")
        }
    }

    public func lookup(_ systemId: String) async throws(HeraldError) -> SystemRecord? {
        if let cached = membership.cachedSystem(systemId) { return cached }
        if lookups.isKnownMissing(systemId) { return nil }
        guard lookups.begin() else { throw .unavailable("too many system lookups in flight; retry") }
        defer { lookups.end() }
        do {
            guard let kv = try await etcd.get(keys.system(systemId)) else {
                lookups.rememberMissing(systemId)
                return nil
            }
            let record = try JSONDecoder().decode(SystemRecord.self, from: Data(kv.value))
            membership.remember(record)
            return record
        } catch {
            throw .unavailable("etcd: \(error)")
        }
    }
}
