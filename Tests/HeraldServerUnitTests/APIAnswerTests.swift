import Foundation
import Testing

@testable import HeraldServer

@Suite("API answers")
struct APIAnswerTests {
    @Test("a send's hand-written answer is byte for byte what the encoder writes")
    func sentAnswer() {
        for id in ["01a231bdaaf517c8bda9b79ca2d8", "", "a\"b\\c/d\u{1}é"] {
            let written = APIAnswer.sent(messageId: id)
            let encoded = APIAnswer.success(["messageId": id])
            #expect(written.status == 200)
            #expect(
                String(decoding: written.body, as: UTF8.self) == String(decoding: encoded.body, as: UTF8.self))
        }
    }
}
