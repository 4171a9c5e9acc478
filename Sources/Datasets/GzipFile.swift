import CZlib
import Foundation

/// A file read through zlib's gzip interface. `gzread` passes a file that is not gzip-compressed
/// through unchanged, so one reader serves both `name.gz` and `name`.
struct GzipFile {
    let path: String
    private let handle: gzFile

    init(path: String) throws {
        guard let handle = gzopen(path, "rb") else {
            throw DatasetError("cannot open \(path) for reading: check that it exists and is readable")
        }
        self.path = path
        self.handle = handle
        // Large reads dominate; a bigger buffer than zlib's default 8 KiB halves the call count.
        gzbuffer(handle, 1 << 18)
    }

    func close() { gzclose(handle) }

    /// The most bytes this file can yield: its size when stored plain, and deflate's largest
    /// expansion (1032:1) of it when gzip-compressed. A header's claim beyond this is corrupt, and
    /// is rejected before anything that size is allocated (a gzip bomb cannot make us allocate
    /// more than the data could hold).
    var maximumContentBytes: Int {
        var status = stat()
        guard stat(path, &status) == 0 else { return 0 }
        let size = Int(status.st_size)
        return gzdirect(handle) == 1 ? size : size.multipliedReportingOverflow(by: 1032).partialValue + (1 << 16)
    }

    /// Fills `buffer` from the current position; returns the number of bytes read, which is
    /// less than `buffer.count` only at the end of the file.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard var address = buffer.baseAddress else { return 0 }
        var total = 0
        while total < buffer.count {
            // gzread takes an unsigned int length; stay well inside it.
            let chunk = UInt32(min(buffer.count - total, 1 << 30))
            let got = gzread(handle, address, chunk)
            if got < 0 {
                var code: Int32 = 0
                let message = gzerror(handle, &code).map { String(cString: $0) } ?? "unknown error"
                throw DatasetError("cannot read \(path): \(message) (is the file a complete gzip file?)")
            }
            if got == 0 { break }
            total += Int(got)
            address += Int(got)
        }
        return total
    }

    /// Reads exactly `count` bytes, or fewer at the end of the file.
    func read(count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let got = try bytes.withUnsafeMutableBytes { try read(into: $0) }
        return got == count ? bytes : Array(bytes[..<got])
    }

    /// True when no byte remains after the current position.
    func isAtEnd() throws -> Bool {
        try read(count: 1).isEmpty
    }
}

/// Reads big-endian 32-bit words, as IDX headers store them.
func bigEndianWord(_ bytes: [UInt8], at offset: Int) -> Int {
    Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
}

/// `0x00000803` style, for magic numbers in messages.
func hex32(_ value: Int) -> String {
    let digits = String(UInt32(truncatingIfNeeded: value), radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
