import Crypto
import Foundation

public func base64URL(_ data: some DataProtocol) -> String {
    Data(data).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// Builds an HS256 JWT by hand: header {"alg":"HS256","typ":"JWT"}, claims sub and exp.
public func makeJWT(secret: String, sub: String, exp: Date, signingSecret: String? = nil) -> String {
    let header = base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
    let claims = base64URL(Data(#"{"sub":"\#(sub)","exp":\#(Int(exp.timeIntervalSince1970))}"#.utf8))
    let input = header + "." + claims
    let key = SymmetricKey(data: Data((signingSecret ?? secret).utf8))
    let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: key)
    return input + "." + base64URL(Data(mac))
}

/// A fresh random base64 32-byte key (as `herald keygen` prints).
public func randomKey() -> String {
    SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
}
