import Foundation
import Model
import Testing

/// One malformed file and the fragments its error message must contain.
struct MalformedCase: Sendable, CustomTestStringConvertible {
    let label: String
    let bytes: Data
    let expected: [String]

    var testDescription: String { label }

    /// A file whose header is `header`, followed by `dataCount` zero bytes.
    init(_ label: String, header: String, dataCount: Int = 0, expect expected: String...) {
        self.label = label
        bytes = rawSafetensors(header, data: [UInt8](repeating: 0, count: dataCount))
        self.expected = expected
    }

    init(_ label: String, bytes: Data, expect expected: String...) {
        self.label = label
        self.bytes = bytes
        self.expected = expected
    }
}

/// A header holding one tensor "w" with the given entry JSON.
private func entry(_ json: String) -> String { #"{"w":"# + json + "}" }

@Suite struct SafetensorsMalformedTests {
    static let framing: [MalformedCase] = [
        MalformedCase("empty file", bytes: Data(), expect: "bad.st: 0 bytes is too short", "truncated"),
        MalformedCase("7 bytes", bytes: Data([8, 0, 0, 0, 0, 0, 0]), expect: "7 bytes is too short"),
        MalformedCase("header past the end", bytes: rawSafetensors("{}", length: 100),
                      expect: "header length 100 runs past the end of the 10-byte file"),
        MalformedCase("absurd header length", bytes: rawSafetensors("{}", length: .max),
                      expect: "header length 18446744073709551615 exceeds the 100000000-byte limit"),
        MalformedCase("header just over the limit", bytes: rawSafetensors("{}", length: 100_000_001),
                      expect: "exceeds the 100000000-byte limit"),
        MalformedCase("empty header", header: "", expect: "header is not valid JSON", "unexpected end"),
        MalformedCase("truncated JSON", header: #"{"w": "#, expect: "is not valid JSON", "unexpected end"),
        MalformedCase("trailing text", header: "{} x", expect: "unexpected text after the top-level value"),
        MalformedCase("array header", header: "[1, 2]", expect: "header is an array, not a JSON object"),
        MalformedCase("string header", header: #""w""#, expect: #"header is the string "w", not a JSON object"#),
        MalformedCase("duplicate tensor name",
                      header: #"{"w":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}"#,
                      dataCount: 8, expect: #"duplicate key "w""#),
        MalformedCase("deep nesting", header: String(repeating: "[", count: 10_000), expect: "nesting deeper than 32 levels"),
        MalformedCase("bad escape", header: #"{"w\q":1}"#, expect: #"invalid escape '\q'"#),
        MalformedCase("lone surrogate", header: #"{"\ud800":1}"#, expect: "unpaired high surrogate"),
        MalformedCase("control character", header: "{\"a\u{1}\":1}", expect: "unescaped control character"),
    ]

    static let entries: [MalformedCase] = [
        MalformedCase("entry not an object", header: entry("3"), expect: #"tensor "w" is the number 3, not an object"#),
        MalformedCase("entry is an array", header: entry("[]"), expect: #"tensor "w" is an array, not an object"#),
        MalformedCase("no dtype", header: entry(#"{"shape":[1],"data_offsets":[0,4]}"#), dataCount: 4,
                      expect: #"tensor "w" has no "dtype" field"#),
        MalformedCase("no shape", header: entry(#"{"dtype":"F32","data_offsets":[0,4]}"#), dataCount: 4,
                      expect: #"tensor "w" has no "shape" field"#),
        MalformedCase("no data_offsets", header: entry(#"{"dtype":"F32","shape":[1]}"#), dataCount: 4,
                      expect: #"tensor "w" has no "data_offsets" field"#),
        MalformedCase("unknown dtype", header: entry(#"{"dtype":"F33","shape":[1],"data_offsets":[0,4]}"#), dataCount: 4,
                      expect: #"tensor "w" has unknown dtype "F33""#, "known: BOOL, U8"),
        MalformedCase("lowercase dtype", header: entry(#"{"dtype":"f32","shape":[1],"data_offsets":[0,4]}"#), dataCount: 4,
                      expect: #"unknown dtype "f32""#),
        MalformedCase("dtype not a string", header: entry(#"{"dtype":4,"shape":[1],"data_offsets":[0,4]}"#), dataCount: 4,
                      expect: "has dtype the number 4, not a string"),
        MalformedCase("shape not an array", header: entry(#"{"dtype":"F32","shape":4,"data_offsets":[0,16]}"#), dataCount: 16,
                      expect: "has shape the number 4, not an array"),
        MalformedCase("negative dimension", header: entry(#"{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}"#),
                      expect: #"tensor "w" has shape[1] = -1, which is negative"#),
        MalformedCase("fractional dimension", header: entry(#"{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}"#), dataCount: 8,
                      expect: "has shape[0] = 2.0, not an integer"),
        MalformedCase("exponent dimension", header: entry(#"{"dtype":"F32","shape":[1e1],"data_offsets":[0,40]}"#), dataCount: 40,
                      expect: "has shape[0] = 1e1, not an integer"),
        MalformedCase("string dimension", header: entry(#"{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}"#), dataCount: 8,
                      expect: #"has shape[0] = the string "2", not a non-negative integer"#),
        MalformedCase("dimension beyond Int64", header: entry(#"{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}"#),
                      dataCount: 4, expect: "99999999999999999999, which does not fit in a 64-bit integer"),
        MalformedCase("element count overflow",
                      header: entry(#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}"#),
                      expect: #"tensor "w" has shape [4294967296, 4294967296], whose size overflows"#),
        MalformedCase("byte count overflow", header: entry(#"{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}"#),
                      expect: "whose size overflows"),
        MalformedCase("one offset", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#), dataCount: 4,
                      expect: "has data_offsets an array, not two integers [begin, end]"),
        MalformedCase("three offsets", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#), dataCount: 8,
                      expect: "not two integers [begin, end]"),
        MalformedCase("offsets not an array", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":"0-4"}"#), dataCount: 4,
                      expect: #"has data_offsets the string "0-4", not two integers"#),
        MalformedCase("string offset", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}"#), dataCount: 4,
                      expect: #"has data_offsets end the string "4", not a non-negative integer"#),
        MalformedCase("negative offset", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}"#), dataCount: 4,
                      expect: "has data_offsets begin -4, which is negative"),
        MalformedCase("begin after end", header: entry(#"{"dtype":"F32","shape":[1],"data_offsets":[8,4]}"#), dataCount: 8,
                      expect: "has data_offsets [8, 4] whose begin is after its end"),
        MalformedCase("end beyond data", header: entry(#"{"dtype":"F32","shape":[100],"data_offsets":[0,400]}"#), dataCount: 4,
                      expect: #"tensor "w" has data_offsets end 400 beyond the 4-byte data section"#, "truncated"),
        MalformedCase("byte length mismatch", header: entry(#"{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#), dataCount: 8,
                      expect: #"tensor "w" has 4 bytes in data_offsets [0, 4], but shape [2] of F32 needs 8"#),
        MalformedCase("half-size bytes", header: entry(#"{"dtype":"F16","shape":[3],"data_offsets":[0,12]}"#), dataCount: 12,
                      expect: "has 12 bytes in data_offsets [0, 12], but shape [3] of F16 needs 6"),
        MalformedCase("overlap",
                      header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                      dataCount: 12, expect: #"tensors "a" and "b" overlap in the data section"#),
        MalformedCase("overlap with a later, contained tensor",
                      header: #"{"big":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"#
                          + #""y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                      dataCount: 16, expect: #"tensors "big" and "y" overlap"#),
        MalformedCase("same range twice",
                      header: #"{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                      dataCount: 4, expect: "overlap"),
        MalformedCase("unicode name", header: #"{"blöck.0.wéight✓":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}"#, dataCount: 1,
                      expect: #"tensor "blöck.0.wéight✓" has unknown dtype "Q8""#),
        MalformedCase("escaped unicode name", header: #"{"\u00e9\ud83d\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,3]}}"#,
                      dataCount: 4, expect: #"tensor "é😀" has 3 bytes"#),
    ]

    static let metadata: [MalformedCase] = [
        MalformedCase("number metadata value", header: #"{"__metadata__":{"format":"pt","epoch":3}}"#,
                      expect: #"metadata entry "epoch" is the number 3, not a string"#),
        MalformedCase("nested metadata value", header: #"{"__metadata__":{"config":{"depth":12}}}"#,
                      expect: #"metadata entry "config" is an object, not a string"#),
        MalformedCase("null metadata value", header: #"{"__metadata__":{"note":null}}"#,
                      expect: #"metadata entry "note" is null, not a string"#),
        MalformedCase("metadata not an object", header: #"{"__metadata__":["pt"]}"#,
                      expect: #"metadata entry "__metadata__" is an array, not an object"#),
    ]

    @Test(arguments: framing + entries + metadata)
    func malformedFileThrowsANamedError(_ malformed: MalformedCase) {
        let error = #expect(throws: SafetensorsError.self) {
            try SafetensorsFile(data: malformed.bytes, source: "bad.st")
        }
        let message = error?.description ?? ""
        #expect(message.hasPrefix("bad.st: "), "\(message)")
        for fragment in malformed.expected {
            #expect(message.contains(fragment), "message \"\(message)\" lacks \"\(fragment)\"")
        }
    }

    @Test func invalidUTF8HeaderIsRejected() {
        var bytes = Array(rawSafetensors(#"{"wX":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]))
        bytes[11] = 0xFF  // the "X"
        let error = #expect(throws: SafetensorsError.self) { try SafetensorsFile(data: Data(bytes), source: "bad.st") }
        #expect(error?.description.contains("bad.st: the safetensors header is not valid UTF-8") == true)
    }

    @Test func truncatedCheckpointOnDiskIsRejected() throws {
        // A checkpoint cut off mid-write by a writer that is not atomic: the header promises more data.
        let scratch = try ScratchDirectory()
        let url = scratch.file("cut.safetensors")
        try SafetensorsWriter.write(tensors: [("a", [64], [Float](repeating: 1, count: 64)), ("b", [8], [Float](repeating: 2, count: 8))],
                                    to: url)
        let whole = try Data(contentsOf: url)
        try whole.prefix(whole.count - 5).write(to: url)
        let error = #expect(throws: SafetensorsError.self) { try SafetensorsFile(contentsOf: url) }
        #expect(error?.description.contains(#"\#(url.path): tensor "b" has data_offsets end 288 beyond the 283-byte data section"#) == true)
    }
}
