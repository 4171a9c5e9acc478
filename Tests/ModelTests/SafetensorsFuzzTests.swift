import Foundation
import Model
import Testing
import TestSupport

/// Seeded mutation fuzzing of the safetensors reader and its accessors (TestSupport/Fuzzing.swift),
/// and a header whose shape product overflows.
@Suite struct SafetensorsFuzzTests {
    @Test func reader() throws {
        var writer = SafetensorsWriter(metadata: ["format": "fuzz", "epoch": "3"])
        try writer.add("a.weight", shape: [3, 5], floats: (0..<15).map(Float.init))
        try writer.add("a.bias", shape: [5], floats: [1, 2, 3, 4, 5])
        try writer.add("labels", shape: [4], int32s: [0, 1, -1, 7])
        try writer.add("count", shape: [], int64s: [42])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-seed-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try writer.write(to: url)
        let seed = [UInt8](try Data(contentsOf: url))
        let report = fuzz("safetensors", seeds: [seed], count: FuzzBudget.inputs(8000), mustMention: "fuzz.safetensors") { bytes in
            let file = try SafetensorsFile(data: Data(bytes), source: "fuzz.safetensors")
            for name in file.names {
                switch try file.entry(named: name).dtype.rawValue {
                case "F32": _ = try file.floats(name)
                case "I32": _ = try file.int32s(name)
                case "I64": _ = try file.int64s(name)
                default: _ = try? file.floats(name)
                }
            }
        }
        #expect(report.accepted > 0 && report.rejected > 0)
    }

    @Test func aShapeWhoseProductOverflowsIsRefused() throws {
        let header = #"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8)
        bytes += [0, 0, 0, 0]
        #expect {
            _ = try SafetensorsFile(data: Data(bytes), source: "overflow.safetensors")
        } throws: { "\($0)".contains("overflow.safetensors") }
    }
}
