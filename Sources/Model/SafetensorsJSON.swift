/// A JSON value from a safetensors header.
///
/// The header is parsed by hand rather than with `JSONSerialization` because the reader treats
/// files as untrusted and must see things Foundation hides: `3` versus `3.0` versus an integer too
/// large for `Int` (a shape dimension must be the first), the order of keys (entries are reported
/// in header order), and duplicate keys (two tensors with one name must be an error, not "last one
/// wins").
enum HeaderJSON {
    case object([(key: String, value: HeaderJSON)])
    case array([HeaderJSON])
    case string(String)
    /// The literal text, validated against the JSON number grammar; see ``integer``.
    case number(String)
    case bool(Bool)
    case null

    /// What the value is, for error messages ("a string", "the number 2.5").
    var kindDescription: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string(let text): return "the string \"\(text.prefix(40))\""
        case .number(let literal): return "the number \(literal.prefix(40))"
        case .bool(let value): return "\(value)"
        case .null: return "null"
        }
    }

    /// The value as a non-negative `Int`, or why it is not one (to complete "… is …").
    var nonNegativeInteger: Result<Int, HeaderJSONError> {
        guard case .number(let literal) = self else {
            return .failure(HeaderJSONError("\(kindDescription), not a non-negative integer"))
        }
        if literal.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) {
            return .failure(HeaderJSONError("\(literal.prefix(40)), not an integer"))
        }
        if literal.hasPrefix("-") { return .failure(HeaderJSONError("\(literal.prefix(40)), which is negative")) }
        guard let value = Int(literal) else {
            return .failure(HeaderJSONError("\(literal.prefix(40)), which does not fit in a 64-bit integer"))
        }
        return .success(value)
    }
}

/// A syntax error in the header, or why a value has the wrong form.
struct HeaderJSONError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A recursive-descent parser for RFC 8259 JSON over UTF-8 bytes.
///
/// Nesting is capped (``maximumDepth``) so a hostile header of 100 MB of `[` cannot overflow the
/// stack; a real header is three levels deep.
struct HeaderJSONParser {
    static let maximumDepth = 32

    private let bytes: [UInt8]
    private var index = 0

    /// Parses one JSON value that spans all of `bytes` (whitespace, such as the writer's space
    /// padding, may follow it). The bytes must already be valid UTF-8.
    static func parse(_ bytes: [UInt8]) throws -> HeaderJSON {
        var parser = HeaderJSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.failure("unexpected text after the top-level value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func failure(_ message: String) -> HeaderJSONError {
        HeaderJSONError("\(message) at byte \(index) of the header")
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard current == byte else {
            throw failure(current == nil ? "unexpected end, expected '\(Character(Unicode.Scalar(byte)))'"
                                         : "expected '\(Character(Unicode.Scalar(byte)))'")
        }
        index += 1
    }

    private mutating func parseValue(depth: Int) throws -> HeaderJSON {
        guard depth < Self.maximumDepth else { throw failure("nesting deeper than \(Self.maximumDepth) levels") }
        guard let byte = current else { throw failure("unexpected end") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseKeyword("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseKeyword("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseKeyword("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw failure("unexpected character '\(Character(Unicode.Scalar(byte)))'")
        }
    }

    private mutating func parseKeyword(_ word: String) throws {
        for byte in word.utf8 {
            guard current == byte else { throw failure("invalid literal, expected \(word)") }
            index += 1
        }
    }

    private mutating func parseObject(depth: Int) throws -> HeaderJSON {
        try expect(UInt8(ascii: "{"))
        var members: [(key: String, value: HeaderJSON)] = []
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw failure("expected a string key") }
            let key = try parseString()
            guard seen.insert(key).inserted else { throw failure("duplicate key \"\(key)\"") }
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            members.append((key, try parseValue(depth: depth + 1)))
            skipWhitespace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "}"))
            return .object(members)
        }
    }

    private mutating func parseArray(depth: Int) throws -> HeaderJSON {
        try expect(UInt8(ascii: "["))
        var elements: [HeaderJSON] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "]"))
            return .array(elements)
        }
    }

    /// Parses a string, decoding escapes; raw bytes are copied through (already valid UTF-8).
    private mutating func parseString() throws -> String {
        try expect(UInt8(ascii: "\""))
        var utf8: [UInt8] = []
        while true {
            guard let byte = current else { throw failure("unterminated string") }
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escape = current else { throw failure("unterminated escape") }
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"): utf8.append(contentsOf: String(try parseUnicodeEscape()).utf8)
                default: throw failure("invalid escape '\\\(Character(Unicode.Scalar(escape)))'")
                }
            case 0x00..<0x20:
                throw failure("unescaped control character in a string")
            default:
                utf8.append(byte)
            }
        }
    }

    /// The scalar of a `\uXXXX` escape (after the `\u`), joining a UTF-16 surrogate pair.
    private mutating func parseUnicodeEscape() throws -> Unicode.Scalar {
        let first = try parseHex4()
        if (0xDC00...0xDFFF).contains(first) { throw failure("unpaired low surrogate \\u\(String(first, radix: 16))") }
        guard (0xD800...0xDBFF).contains(first) else { return Unicode.Scalar(first)! }
        guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
            throw failure("unpaired high surrogate \\u\(String(first, radix: 16))")
        }
        index += 2
        let second = try parseHex4()
        guard (0xDC00...0xDFFF).contains(second) else { throw failure("invalid surrogate pair") }
        return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))!
    }

    private mutating func parseHex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = current, let digit = Character(Unicode.Scalar(byte)).hexDigitValue else {
                throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// Validates `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and returns the literal.
    private mutating func parseNumber() throws -> String {
        let start = index
        func isDigit(_ byte: UInt8?) -> Bool { byte.map { (0x30...0x39).contains($0) } ?? false }
        if current == UInt8(ascii: "-") { index += 1 }
        guard isDigit(current) else { throw failure("invalid number") }
        if current == UInt8(ascii: "0") {
            index += 1
            if isDigit(current) { throw failure("invalid number (leading zero)") }
        } else {
            while isDigit(current) { index += 1 }
        }
        if current == UInt8(ascii: ".") {
            index += 1
            guard isDigit(current) else { throw failure("invalid number (no digits after '.')") }
            while isDigit(current) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard isDigit(current) else { throw failure("invalid number (no exponent digits)") }
            while isDigit(current) { index += 1 }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }
}
