import CPNG
import CTurboJPEG
import CZlib
import Foundation
import Testing
@testable import Datasets

/// A fresh directory under the system temp folder, removed when the test's value goes away.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "datasets-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Creates `relative` (and its parents) and returns its full path.
    @discardableResult
    func folder(_ relative: String) throws -> String {
        let full = path + "/" + relative
        try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
        return full
    }

    func write(_ bytes: [UInt8], to relative: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path + "/" + relative))
    }
}

/// Deterministic bytes (SplitMix64), so a failing test fails the same way every run.
struct TestBytes {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8(truncatingIfNeeded: next() >> 56) }
    }
}

/// Writers for the formats under test, through the same C libraries the readers use.
enum TestFiles {
    /// Writes `bytes` gzip-compressed with zlib's gz interface.
    static func writeGzip(_ bytes: [UInt8], to path: String) throws {
        guard let file = gzopen(path, "wb") else { throw DatasetError("test: cannot create \(path)") }
        let written = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
        gzclose(file)
        guard written == Int32(bytes.count) else { throw DatasetError("test: gzwrite wrote \(written) of \(bytes.count)") }
    }

    static func bigEndian(_ value: Int) -> [UInt8] {
        [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// An IDX images file body: magic, count, rows, columns, pixels.
    static func idxImages(count: Int, rows: Int, columns: Int, pixels: [UInt8], magic: Int = 0x0803) -> [UInt8] {
        bigEndian(magic) + bigEndian(count) + bigEndian(rows) + bigEndian(columns) + pixels
    }

    static func idxLabels(_ labels: [UInt8], magic: Int = 0x0801) -> [UInt8] {
        bigEndian(magic) + bigEndian(labels.count) + labels
    }

    /// An 8-bit PNG through libpng's simplified writer; `channels` 1 (grey), 3 (RGB) or 4 (RGBA).
    static func png(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> [UInt8] {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        let color = UInt32(PNG_FORMAT_FLAG_COLOR), alpha = UInt32(PNG_FORMAT_FLAG_ALPHA)
        image.format = [1: 0, 3: color, 4: color | alpha][channels]!
        var size = 0
        guard png_image_write_to_memory(&image, nil, &size, 0, pixels, 0, nil) != 0 else {
            throw DatasetError("test: png size query failed")
        }
        var output = [UInt8](repeating: 0, count: size)
        guard png_image_write_to_memory(&image, &output, &size, 0, pixels, 0, nil) != 0 else {
            throw DatasetError("test: png write failed")
        }
        return Array(output.prefix(size))
    }

    /// A 16-bit PNG assembled by hand (signature, IHDR, one IDAT, IEND) so that it carries no
    /// gAMA chunk: libpng's simplified writer would tag 16-bit data as linear.
    static func png16(width: Int, height: Int, channels: Int, samples: [UInt16]) -> [UInt8] {
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            let crc = body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) }
            return bigEndian(data.count) + body + bigEndian(Int(crc))
        }
        let colorType: UInt8 = channels == 1 ? 0 : 2
        let header = bigEndian(width) + bigEndian(height) + [16, colorType, 0, 0, 0]
        var raw: [UInt8] = []
        for row in 0..<height {
            raw.append(0)  // filter type None
            for sample in samples[row * width * channels ..< (row + 1) * width * channels] {
                raw += [UInt8(sample >> 8), UInt8(sample & 0xFF)]
            }
        }
        var compressedSize = compressBound(UInt(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
        _ = compress(&compressed, &compressedSize, raw, UInt(raw.count))
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header)
            + chunk("IDAT", Array(compressed.prefix(Int(compressedSize)))) + chunk("IEND", [])
    }

    /// A quality-100 JPEG through TurboJPEG: grey for 1 channel, 4:4:4 RGB for 3, CMYK for 4.
    static func jpeg(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> [UInt8] {
        guard let handle = tjInitCompress() else { throw DatasetError("test: tjInitCompress failed") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let format = [1: TJPF_GRAY, 3: TJPF_RGB, 4: TJPF_CMYK][channels]!
        let subsampling = channels == 1 ? TJSAMP_GRAY : TJSAMP_444
        guard tjCompress2(handle, pixels, Int32(width), 0, Int32(height), Int32(format.rawValue), &output, &size,
                          Int32(subsampling.rawValue), 100, 0) == 0, let output else {
            throw DatasetError("test: tjCompress2 failed: \(String(cString: tjGetErrorStr2(handle)))")
        }
        defer { tjFree(output) }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }

    /// Smooth pixels (JPEG keeps them within a few levels at quality 100), offset by `seed`.
    static func gradient(width: Int, height: Int, channels: Int, seed: Int) -> [UInt8] {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels {
                    pixels.append(UInt8((seed * 37 + x * 5 + y * 3 + c * 60) % 200 + 20))
                }
            }
        }
        return pixels
    }
}

/// Expects `body` to throw a ``DatasetError`` whose message contains every one of `fragments`.
func expectDatasetError(containing fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
                        _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a DatasetError containing \(fragments), but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as DatasetError {
        for fragment in fragments where !error.description.contains(fragment) {
            Issue.record("error \"\(error.description)\" does not mention \"\(fragment)\"", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a DatasetError, got \(error)", sourceLocation: sourceLocation)
    }
}
