import Testing
@testable import HeraldKafka
@Test func kafkaPlaceholder() { #expect(Bool(true)) }
