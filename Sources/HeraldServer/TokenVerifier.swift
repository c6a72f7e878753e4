import Crypto
import Foundation
import HeraldCore
import JWTKit
import Synchronization

/// Claims of a client connection token: HS256, signed with the system's secret.
struct ClientClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

enum TokenError: Error, CustomStringConvertible {
    case noSecret

    var description: String { "the system has no secret to verify tokens with" }
}

/// Verifies connection tokens, keeping one key collection per system.
final class TokenVerifier: Sendable {
    private let codec: ClientIDCodec
    private let keys = Mutex<[String: JWTKeyCollection]>([:])

    init(codec: ClientIDCodec) {
        self.codec = codec
    }

    /// Answers the user id (`sub`) of a valid token.
    func verify(_ token: String, for system: SystemRecord) async throws -> String {
        let claims = try await collection(for: system).verify(token, as: ClientClaims.self)
        return claims.sub.value
    }

    private func collection(for system: SystemRecord) async throws -> JWTKeyCollection {
        if let cached = keys.withLock({ $0[system.systemId] }) { return cached }
        guard let sealed = system.sealedSecret, let secret = codec.openBytes(sealed), secret.count >= 32 else {
            throw TokenError.noSecret
        }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        keys.withLock { $0[system.systemId] = collection }
        return collection
    }
}
