import Hummingbird

/// `GET /herald.js` and `/herald.d.ts`: the browser client (clients/, embedded by
/// scripts/embed-clients), readable from any origin so pages elsewhere can import it.
struct ClientScriptController: Sendable {
    func register(to router: Router<HeraldRequestContext>) {
        serve("herald.js", ClientScripts.heraldJS, etag: ClientScripts.heraldJSETag, type: "text/javascript; charset=utf-8", on: router)
        serve("herald.d.ts", ClientScripts.heraldTypes, etag: ClientScripts.heraldTypesETag, type: "text/plain; charset=utf-8", on: router)
    }

    private func serve(_ path: String, _ text: String, etag: String, type: String, on router: Router<HeraldRequestContext>) {
        let body = ByteBuffer(string: text)
        let answer: @Sendable (Request, HeraldRequestContext) -> Response = { request, _ in
            var headers: HTTPFields = [
                .contentType: type, .accessControlAllowOrigin: "*", .cacheControl: "public, max-age=300", .eTag: etag,
            ]
            if request.headers[.ifNoneMatch] == etag {
                headers[.contentType] = nil
                return Response(status: .notModified, headers: headers)
            }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
        }
        router.get(RouterPath(path), use: answer)
        router.head(RouterPath(path), use: answer)
    }
}
