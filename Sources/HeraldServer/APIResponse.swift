import Foundation
import HeraldCore
import Hummingbird

/// A finished API answer: status and `{"code","msg","data"}` body. Sendable, so it can be
/// remembered for idempotent repeats.
struct APIAnswer: Sendable {
    var status: Int
    var body: Data
    /// The contract's code in the body (0 for success).
    var code = 0

    private struct Envelope<Payload: Encodable>: Encodable {
        var code: Int
        var msg: String
        var data: Payload
    }

    static func success(_ data: some Encodable) -> APIAnswer {
        APIAnswer(status: 200, body: encode(Envelope(code: 0, msg: "success", data: data)))
    }

    /// `{"code":0,"data":{"messageId":…},"msg":"success"}`, the answer of every send, written by
    /// hand: JSONEncoder was 7% of a standalone unicast send's CPU (perf, 5,000 msg/s).
    static func sent(messageId: String) -> APIAnswer {
        let text = JSONWriter.object(capacity: 64 + messageId.utf8.count) { w in
            w.member("code", 0)
            w.key("data")
            w.beginObject()
            w.member("messageId", messageId)
            w.endObject()
            w.member("msg", "success")
        }
        return APIAnswer(status: 200, body: Data(text.utf8))
    }

    static let success = APIAnswer(status: 200, body: encode(Envelope<JSONValue>(code: 0, msg: "success", data: .null)))

    static func failure(_ error: HeraldError) -> APIAnswer {
        APIAnswer(
            status: error.status, body: encode(Envelope(code: error.code, msg: error.message, data: error.data ?? .null)),
            code: error.code)
    }

    static func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        // Our envelopes hold only plain JSON values (never a client's `data`); should encoding
        // ever fail, the answer is still the contract's shape.
        guard let body = try? encoder.encode(value) else {
            return Data(#"{"code":5000,"msg":"the answer could not be encoded","data":null}"#.utf8)
        }
        return body
    }

    var response: Response {
        Response(
            status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns anything a route throws into the contract's error body, so no failure answers 200
/// or leaks a framework error page.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = HeraldRequestContext
    /// To tell "no such route" (404) from "not with this method" (405 with `Allow`).
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HeraldError {
            return APIAnswer.failure(error).response
        } catch let error as HTTPError where error.status == .notFound {
            let methods = routes.methods(for: request.uri.path)
            guard !methods.isEmpty, !methods.contains(request.method.rawValue) else {
                return APIAnswer.failure(HeraldError(.noRoute, message: "no route \(request.uri.path)")).response
            }
            let allow = Set(methods).sorted().joined(separator: ", ")
            var response = APIAnswer.failure(
                HeraldError(.methodNotAllowed, message: "\(request.method) not allowed on \(request.uri.path): use \(allow)")
            ).response
            response.headers[.allow] = allow
            return response
        } catch let error as HTTPError {
            return APIAnswer.failure(HeraldError(httpStatus: error.status.code, message: error.body ?? "\(error.status)")).response
        }
    }
}
