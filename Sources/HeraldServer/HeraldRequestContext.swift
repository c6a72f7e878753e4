import Hummingbird
import NIOCore

/// The request context of every route.
public struct HeraldRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}
