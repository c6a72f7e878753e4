import Testing
@Test func clusterPlaceholder() { #expect(Bool(true)) }
