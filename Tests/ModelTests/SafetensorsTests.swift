import FileSystem
import Foundation
import Tensors
import Model
import Testing

/// A fresh directory under the system temporary directory, removed when the value goes away.
final class ScratchDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
}

/// Safetensors bytes built by hand: the 8-byte little-endian length of `header` (or `length`
/// when given, to lie about it), the header, then `data`.
func rawSafetensors(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> Data {
    var bytes = withUnsafeBytes(of: (length ?? UInt64(header.utf8.count)).littleEndian) { Array($0) }
    bytes += Array(header.utf8) + data
    return Data(bytes)
}

func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}

@Suite struct SafetensorsTests {
    @Test func roundTripKeepsNamesOrderShapesMetadataAndBits() throws {
        let scratch = try ScratchDirectory()
        var generator = SplitMix64(seed: 42)
        // Bit patterns a lossy path would change: NaN with payload, -0, ±inf, a subnormal.
        let special: [Float] = [.nan, Float(bitPattern: 0x7FC0_1234), -0.0, .infinity, -.infinity, .leastNonzeroMagnitude]
        let floats: [(name: String, shape: [Int], values: [Float])] = [
            ("module.base_encoder.cls_token", [1, 1, 8], randomValues(8, using: &generator)),
            ("module.base_encoder.blocks.0.attn.qkv.weight", [24, 8], randomValues(192, using: &generator)),
            ("blöcks.0.näme✓ \"quoted\" \\ back\ttab/𝛼", [3], randomValues(3, using: &generator)),
            ("scalar", [], [3.25]),
            ("empty", [0, 5], []),
            ("odd", [7, 3], randomValues(21, in: -100...100, using: &generator)),
            ("special", [6], special),
        ]
        let metadata = ["format": "pt", "epoch": "12", "note": "ünïcode \"q\"\n\u{1}"]
        var writer = SafetensorsWriter(metadata: metadata)
        for tensor in floats { try writer.add(tensor.name, shape: tensor.shape, floats: tensor.values) }
        try writer.add("labels32", shape: [5], int32s: [0, -1, .max, .min, 7])
        try writer.add("labels64", shape: [2, 2], int64s: [.min, .max, -3, 1 << 40])
        let url = scratch.file("round trip.safetensors")
        try writer.write(to: url)

        let file = try SafetensorsFile(contentsOf: url)
        #expect(file.names == floats.map(\.name) + ["labels32", "labels64"])
        #expect(file.metadata == metadata)
        for tensor in floats {
            let entry = try file.entry(named: tensor.name)
            #expect(entry.dtype == .float32 && entry.shape == tensor.shape, "\(tensor.name)")
            let read = try file.floats(tensor.name, shape: tensor.shape)
            #expect(read.map(\.bitPattern) == tensor.values.map(\.bitPattern), "\(tensor.name)")
        }
        #expect(try file.int32s("labels32", shape: [5]) == [0, -1, .max, .min, 7])
        #expect(try file.int64s("labels64", shape: [2, 2]) == [.min, .max, -3, 1 << 40])
        #expect(try file.int64s("labels32") == [0, -1, Int64(Int32.max), Int64(Int32.min), 7])

        // Contiguous in the order written, and the data section 8-byte aligned.
        var offset = 0
        for entry in file.entries {
            #expect(entry.byteRange.lowerBound == offset, "\(entry.name)")
            offset = entry.byteRange.upperBound
        }
        let bytes = try Data(contentsOf: url)
        let headerLength = bytes.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect((8 + headerLength) % 8 == 0)
        #expect(bytes.count == 8 + headerLength + offset)
    }

    @Test func smallFileMatchesTheHandComputedLayout() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("a.safetensors")
        try SafetensorsWriter.write(tensors: [("a", [2], [1, -2])], to: url)
        // 54 bytes of JSON, padded with 2 spaces to 56 so the data starts at 8 + 56 = 64.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        #expect(header.utf8.count == 54)
        let expected: [UInt8] = [56, 0, 0, 0, 0, 0, 0, 0] + Array(header.utf8) + [0x20, 0x20]
            + [0x00, 0x00, 0x80, 0x3F] + [0x00, 0x00, 0x00, 0xC0]  // 1.0 and -2.0 as little-endian F32
        #expect(Array(try Data(contentsOf: url)) == expected)
    }

    @Test func metadataComesFirstSortedAndTensorsFollowInGivenOrder() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("two.safetensors")
        try SafetensorsWriter.write(tensors: [("w", [2, 1], [1, 2]), ("b", [3], [3, 4, 5])],
                                    metadata: ["format": "pt", "epoch": "3"], to: url)
        // 153 bytes of JSON + 7 spaces = 160; data starts at 168.
        let header = #"{"__metadata__":{"epoch":"3","format":"pt"},"w":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"#
            + #""b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#
        #expect(header.utf8.count == 153)
        let values: [Float] = [1, 2, 3, 4, 5]
        let expected = [160, 0, 0, 0, 0, 0, 0, 0] + Array(header.utf8) + [UInt8](repeating: 0x20, count: 7)
            + littleEndianBytes(values.map(\.bitPattern))
        #expect(Array(try Data(contentsOf: url)) == expected)
        #expect(try SafetensorsFile(contentsOf: url).names == ["w", "b"])
    }

    @Test func fileWithNoTensorsRoundTrips() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("empty.safetensors")
        try SafetensorsWriter().write(to: url)
        #expect(Array(try Data(contentsOf: url)) == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        let file = try SafetensorsFile(contentsOf: url)
        #expect(file.entries.isEmpty && file.metadata.isEmpty)
        let error = #expect(throws: SafetensorsError.self) { try file.floats("anything") }
        #expect(error?.description.contains("the file holds no tensors") == true)
    }

    @Test func readerAcceptsUnpaddedHeadersUnalignedDataAndEmptyTensorsInsideOthers() throws {
        // Another writer may not pad; the data then starts at an odd offset. "z" has no bytes, so
        // its offsets inside "a" are no overlap.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"#
            + #""__metadata__":null, "n":{"dtype":"I64","shape":[1],"data_offsets":[8,16],"extra":true}}"#
        let file = try SafetensorsFile(data: rawSafetensors(header, data: littleEndianBytes([Float(1.5).bitPattern, Float(-3).bitPattern])
                                                                + littleEndianBytes([Int64(-9)])))
        #expect(try file.floats("a") == [1.5, -3])
        #expect(try file.floats("z", shape: [0]) == [])
        #expect(try file.int64s("n") == [-9])
        #expect(file.metadata.isEmpty)
    }

    // MARK: Half-precision conversion

    @Test func halfAndBFloat16KnownBitPatternsWiden() throws {
        let half: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x8000, 0x7BFF, 0x7E00]
        let halfExpected: [Float] = [1, -2, 0.5, .infinity, -.infinity, 0x1p-24, 1023 * 0x1p-24, -0.0, 65504, .nan]
        let bfloat: [UInt16] = [0x3F80, 0xC000, 0x3F00, 0x7F80, 0x0001, 0x8000, 0x7FC0]
        let bfloatExpected: [Float] = [1, -2, 0.5, .infinity, Float(bitPattern: 0x0001_0000), -0.0, .nan]
        let header = #"{"h":{"dtype":"F16","shape":[2,5],"data_offsets":[0,20]},"b":{"dtype":"BF16","shape":[7],"data_offsets":[20,34]}}"#
        let file = try SafetensorsFile(data: rawSafetensors(header, data: littleEndianBytes(half + bfloat)))
        for (read, expected) in [(try file.floats("h", shape: [2, 5]), halfExpected), (try file.floats("b"), bfloatExpected)] {
            for (value, reference) in zip(read, expected) {
                #expect(value.bitPattern == reference.bitPattern || (value.isNaN && reference.isNaN),
                        "got \(value), expected \(reference)")
            }
        }
        #expect(SafetensorsFile.float(fromHalf: 0x0001) > 0 && SafetensorsFile.float(fromHalf: 0x8001) == -0x1p-24)
        #expect(SafetensorsFile.float(fromBFloat16: 0x0001).isSubnormal)
    }

    #if !(os(macOS) && arch(x86_64))
    @Test func everyHalfBitPatternMatchesTheStandardLibrary() {
        var mismatches: [UInt16] = []
        for bits in UInt16.min...UInt16.max {
            let ours = SafetensorsFile.float(fromHalf: bits), reference = Float(Float16(bitPattern: bits))
            if !(ours.bitPattern == reference.bitPattern || (ours.isNaN && reference.isNaN)) { mismatches.append(bits) }
        }
        #expect(mismatches.isEmpty, "first mismatching patterns: \(mismatches.prefix(5).map { String($0, radix: 16) })")
    }
    #endif

    // MARK: Errors at request time

    @Test func missingTensorListsTheClosestNames() throws {
        var writer = SafetensorsWriter()
        for name in ["head.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.mlp.fc1.weight",
                     "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "norm.weight"] {
            try writer.add(name, shape: [1], floats: [1])
        }
        let scratch = try ScratchDirectory()
        let url = scratch.file("names.safetensors")
        try writer.write(to: url)
        let file = try SafetensorsFile(contentsOf: url)
        let error = #expect(throws: SafetensorsError.self) { try file.floats("blocks.0.attn.proj.weight") }
        let message = error?.description ?? ""
        #expect(message.contains(url.path) && message.contains(#"no tensor named "blocks.0.attn.proj.weight""#))
        #expect(message.contains(#""blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias""#))
        #expect(message.contains("and 2 more") && !message.contains("norm.weight"))
    }

    @Test func shapeAndDTypeMismatchesNameTheTensor() throws {
        let header = #"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"i":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}}"#
        let file = try SafetensorsFile(data: rawSafetensors(header, data: [UInt8](repeating: 0, count: 32)), source: "ckpt.st")
        let shape = #expect(throws: SafetensorsError.self) { try file.floats("w", shape: [3, 2]) }
        #expect(shape?.description.contains(#"ckpt.st: tensor "w" has shape [2, 3] but [3, 2] was expected"#) == true)
        let floatAsInt = #expect(throws: SafetensorsError.self) { try file.int32s("w") }
        #expect(floatAsInt?.description.contains(#"tensor "w" has dtype F32, but this accessor reads I32"#) == true)
        let intAsFloat = #expect(throws: SafetensorsError.self) { try file.floats("i") }
        #expect(intAsFloat?.description.contains("has dtype I64, but this accessor reads F32, F16, BF16") == true)
    }

    @Test func unreadableFileNamesThePath() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("absent.safetensors")
        let error = #expect(throws: SafetensorsError.self) { try SafetensorsFile(contentsOf: url) }
        #expect(error?.description.contains("\(url.path): cannot read safetensors file") == true)
        #expect(FileManager.default.createFile(atPath: url.path, contents: Data()))
        let empty = #expect(throws: SafetensorsError.self) { try SafetensorsFile(contentsOf: url) }
        #expect(empty?.description.contains("\(url.path): 0 bytes is too short") == true)
    }

    // MARK: Writer

    @Test func writerRejectsInconsistentTensors() throws {
        var writer = SafetensorsWriter()
        try writer.add("w", shape: [2, 2], floats: [1, 2, 3, 4])
        let count = #expect(throws: SafetensorsError.self) { try writer.add("x", shape: [2, 3], floats: [1, 2]) }
        #expect(count?.description.contains(#"tensor "x": shape [2, 3] holds 6 elements but 2 values were given"#) == true)
        let duplicate = #expect(throws: SafetensorsError.self) { try writer.add("w", shape: [1], int32s: [1]) }
        #expect(duplicate?.description.contains("already added") == true)
        let reserved = #expect(throws: SafetensorsError.self) { try writer.add("__metadata__", shape: [], int64s: [1]) }
        #expect(reserved?.description.contains("reserved") == true)
        let negative = #expect(throws: SafetensorsError.self) { try writer.add("n", shape: [-1, -2], floats: [1, 2]) }
        #expect(negative?.description.contains("negative dimension") == true)
    }

    @Test func overwriteReplacesTheFileAndLeavesNoTemporaryFiles() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("ckpt.safetensors")
        try SafetensorsWriter.write(tensors: [("w", [2], [1, 2])], to: url)
        try SafetensorsWriter.write(tensors: [("w", [3], [4, 5, 6])], metadata: ["step": "2"], to: url)
        let file = try SafetensorsFile(contentsOf: url)
        #expect(try file.floats("w", shape: [3]) == [4, 5, 6] && file.metadata == ["step": "2"])
        #expect(scratch.contents == ["ckpt.safetensors"])
    }

    @Test func writingIntoAMissingDirectoryThrowsAndCreatesNothing() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.file("no such dir").appendingPathComponent("ckpt.safetensors")
        let error = #expect(throws: FileSystemError.self) {
            try SafetensorsWriter.write(tensors: [("w", [1], [1])], to: url)
        }
        #expect(error?.description.hasPrefix("cannot create \(url.path): No such file or directory (ENOENT)") == true)
        #expect(scratch.contents.isEmpty)
    }

    @Test func failedRenameLeavesTheDestinationUntouchedAndRemovesTheTemporaryFile() throws {
        // The destination is a non-empty directory, so everything succeeds up to rename(2), which
        // fails: the temporary file was fully written and must be cleaned up.
        let scratch = try ScratchDirectory()
        let url = scratch.file("ckpt.safetensors")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
        try SafetensorsWriter.write(tensors: [("keep", [1], [7])], to: url.appendingPathComponent("inner.safetensors"))
        let error = #expect(throws: FileSystemError.self) {
            try SafetensorsWriter.write(tensors: [("w", [4], [1, 2, 3, 4])], to: url)
        }
        #expect(error?.description.hasPrefix("cannot rename into place \(url.path): Is a directory (EISDIR)") == true)
        #expect(scratch.contents == ["ckpt.safetensors"])
        let inner = try SafetensorsFile(contentsOf: url.appendingPathComponent("inner.safetensors"))
        #expect(try inner.floats("keep") == [7])
    }

    // MARK: Interoperability with PyTorch's safetensors (run by hand, see tools/safetensors_interop.py)

    @Test(.enabled(if: ProcessInfo.processInfo.environment["SAFETENSORS_INTEROP_DIR"] != nil,
                   "set SAFETENSORS_INTEROP_DIR to check against tools/safetensors_interop.py"))
    func interoperatesWithPythonSafetensors() throws {
        let directory = URL(fileURLWithPath: ProcessInfo.processInfo.environment["SAFETENSORS_INTEROP_DIR"]!)
        // Read what numpy wrote (`safetensors_interop.py write`).
        let theirs = try SafetensorsFile(contentsOf: directory.appendingPathComponent("numpy.safetensors"))
        #expect(theirs.metadata == ["format": "np", "note": "ünï"])
        #expect(try theirs.floats("f32", shape: [3, 4]) == (0..<12).map { Float($0) * 0.5 - 1 })
        #expect(try theirs.floats("f16", shape: [5]) == [1, -2, 0.5, .infinity, 0x1p-24])
        #expect(try theirs.int64s("i64", shape: [3]) == [-(1 << 40), 7, 1 << 62])
        #expect(try theirs.int32s("i32", shape: [2]) == [-5, 6])
        #expect(try theirs.floats("empty", shape: [0, 3]) == [])
        #expect(try theirs.floats("module.blöck.0.wéight", shape: [2]) == [1, 1])
        // Write ours for `safetensors_interop.py check`.
        var writer = SafetensorsWriter(metadata: ["source": "mocov3-cl", "epoch": "3"])
        try writer.add("weights", shape: [2, 3], floats: (0..<6).map { Float($0) * 0.25 - 0.5 })
        try writer.add("blöck.✓", shape: [], floats: [42])
        try writer.add("labels", shape: [2], int64s: [-1, 1 << 40])
        try writer.add("i32", shape: [3], int32s: [.min, 0, .max])
        try writer.add("empty", shape: [0, 4], floats: [])
        try writer.write(to: directory.appendingPathComponent("swift.safetensors"))
    }
}
