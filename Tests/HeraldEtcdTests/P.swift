import Testing
@testable import HeraldEtcd
@Test func etcdPlaceholder() { #expect(Bool(true)) }
