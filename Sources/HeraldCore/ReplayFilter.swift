import Foundation

/// Which carried messages to replay: a time window and any of client, group, system, message.
public struct ReplayFilter: Sendable, Hashable {
    /// Milliseconds since the epoch, inclusive.
    public var since: Int64?
    /// Milliseconds since the epoch, inclusive.
    public var until: Int64?
    public var clientId: String?
    public var groupName: String?
    public var systemId: String?
    public var messageId: String?
    public var limit: Int?

    public init(
        since: Int64? = nil, until: Int64? = nil, clientId: String? = nil, groupName: String? = nil,
        systemId: String? = nil, messageId: String? = nil, limit: Int? = nil
    ) {
        self.since = since
        self.until = until
        self.clientId = clientId
        self.groupName = groupName
        self.systemId = systemId
        self.messageId = messageId
        self.limit = limit
    }

    /// Builds a filter from textual options (query parameters or command-line options),
    /// throwing an error that names the offending option.
    public static func parse(_ options: [String: String], now: Int64 = Clock.nowMillis()) throws(HeraldError) -> ReplayFilter {
        func text(_ name: String) -> String? {
            guard let value = options[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        var filter = ReplayFilter(
            clientId: text("clientId"), groupName: text("groupName"), systemId: text("systemId"),
            messageId: text("messageId"))
        if let since = text("since") {
            guard let value = TimeExpression.parse(since, now: now) else {
                throw .invalidField("since", "is not an RFC 3339 time or a relative time like -15m: \(since)")
            }
            filter.since = value
        }
        if let until = text("until") {
            guard let value = TimeExpression.parse(until, now: now) else {
                throw .invalidField("until", "is not an RFC 3339 time or a relative time like -15m: \(until)")
            }
            filter.until = value
        }
        if let since = filter.since, let until = filter.until, until < since {
            throw .invalidField("until", "is before since")
        }
        if let limit = text("limit") {
            guard let value = Int(limit), value > 0 else { throw .invalidField("limit", "must be a positive integer") }
            filter.limit = value
        }
        return filter
    }

    public func matches(_ record: JournalRecord) -> Bool {
        let message = record.message
        var client: String?
        if case .client(_, let raw) = message.target { client = raw }
        return matches(
            timestamp: record.timestamp, systemId: message.systemId, messageId: message.messageId,
            groupName: message.groupName, clientId: client)
    }

    public func matches(timestamp: Int64, systemId: String, messageId: String, groupName: String?, clientId: String?) -> Bool {
        if let since, timestamp < since { return false }
        if let until, timestamp > until { return false }
        if let wanted = self.systemId, systemId != wanted { return false }
        if let wanted = self.messageId, messageId != wanted { return false }
        if let wanted = self.groupName, groupName != wanted { return false }
        if let wanted = self.clientId, clientId != wanted { return false }
        return true
    }
}

/// Times as ops type them: RFC 3339 (`2026-11-28T10:00:00Z`), `now`, or relative to now
/// (`-15m`, `-2h`, `-30s`, `-1d`, `-500ms`).
public enum TimeExpression {
    public static func parse(_ text: String, now: Int64) -> Int64? {
        if text == "now" { return now }
        if let relative = parseRelative(text) {
            let (sum, overflow) = now.addingReportingOverflow(relative)
            return overflow ? nil : sum
        }
        return parseRFC3339(text)
    }

    static func parseRelative(_ text: String) -> Int64? {
        guard let sign = text.first, sign == "-" || sign == "+" else { return nil }
        let body = text.dropFirst()
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, scale) in units where body.hasSuffix(suffix) {
            guard let amount = Int64(body.dropLast(suffix.count)), amount >= 0 else { continue }
            let (millis, overflow) = amount.multipliedReportingOverflow(by: scale)
            guard !overflow else { return nil }
            return sign == "-" ? -millis : millis
        }
        return nil
    }

    static func parseRFC3339(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
        formatter.formatOptions = [.withInternetDateTime]
        if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
        return nil
    }

    public static func format(_ millis: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}
