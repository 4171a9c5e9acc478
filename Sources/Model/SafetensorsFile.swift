import FileSystem
import Foundation

// The data section is read by copying raw bytes, which is only correct on a little-endian host
// (safetensors stores little-endian). Every platform this project targets is; a big-endian port
// must add byte swapping rather than read garbage.
#if _endian(big)
#error("SafetensorsFile reads little-endian data by memcpy; add byte swapping for big-endian hosts")
#endif

/// Element types of the safetensors format, named as in its header (`"F32"`, `"BF16"`, …).
///
/// All are recognized so that any valid file opens and its entries can be listed; the accessors
/// of ``SafetensorsFile`` read the float and integer types this project uses.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL", uint8 = "U8", int8 = "I8", float8E5M2 = "F8_E5M2", float8E4M3 = "F8_E4M3"
    case int16 = "I16", uint16 = "U16", float16 = "F16", bfloat16 = "BF16"
    case int32 = "I32", uint32 = "U32", float32 = "F32"
    case int64 = "I64", uint64 = "U64", float64 = "F64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .uint8, .int8, .float8E5M2, .float8E4M3: return 1
        case .int16, .uint16, .float16, .bfloat16: return 2
        case .int32, .uint32, .float32: return 4
        case .int64, .uint64, .float64: return 8
        }
    }
}

/// A safetensors file opened for reading: the format PyTorch's `safetensors` and timm use for
/// checkpoints, so weights move between this engine and PyTorch without pickle.
///
/// Layout: an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON mapping each tensor
/// name to `{"dtype", "shape", "data_offsets": [begin, end)}` (offsets into the data section),
/// an optional `"__metadata__"` object of strings, then the little-endian, row-major data section.
///
/// The file is treated as untrusted: ``init(contentsOf:)`` validates the whole header against
/// the data section (every malformed case is a thrown ``SafetensorsError`` naming the tensor),
/// so the accessors only check what the caller asks for. The file is memory-mapped; each accessor
/// copies one tensor out once.
///
/// ```swift
/// let checkpoint = try SafetensorsFile(contentsOf: url)
/// let qkv = try checkpoint.floats("module.base_encoder.blocks.0.attn.qkv.weight", shape: [2304, 768])
/// ```
public struct SafetensorsFile: Sendable {
    /// One tensor's header entry.
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let dtype: SafetensorsDType
        /// Row-major shape; `[]` is a scalar (one element).
        public let shape: [Int]
        /// Bytes of the data section (which starts after the header) that hold the tensor.
        public let byteRange: Range<Int>

        /// Number of elements.
        public var count: Int { shape.reduce(1, *) }
    }

    /// Headers larger than this are rejected before being read, as PyTorch's `safetensors` does
    /// (its limit is also 100 MB); a real header is a few hundred bytes per tensor.
    public static let maximumHeaderLength = 100_000_000

    /// The file's `"__metadata__"` (empty when it has none).
    public let metadata: [String: String]
    /// The tensors in header order (for files from ``SafetensorsWriter``, the order written).
    public let entries: [Entry]
    /// Where the file came from, as shown in errors.
    public let source: String

    private let contents: Data
    /// Offset of the data section in `contents`: 8 + header length.
    private let dataStart: Int
    private let index: [String: Int]

    /// Tensor names in header order.
    public var names: [String] { entries.map(\.name) }

    /// Opens and validates a safetensors file, memory-mapping it so a 1 GB checkpoint is not
    /// read into memory twice.
    public init(contentsOf url: URL) throws {
        let contents: Data
        do {
            contents = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw SafetensorsError.unreadable(file: url.path, reason: FileSystemError.posixCode(of: error)
                .map(FileSystemError.cause) ?? error.localizedDescription)
        }
        try self.init(data: contents, source: url.path)
    }

    /// Validates safetensors bytes already in memory; `source` names them in errors.
    public init(data: Data, source: String = "<memory>") throws {
        self.contents = data
        self.source = source
        let fileSize = data.count
        guard fileSize >= 8 else { throw SafetensorsError.tooShort(file: source, byteCount: fileSize) }
        let headerLength = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(Self.maximumHeaderLength), headerLength <= UInt64(fileSize - 8) else {
            throw SafetensorsError.badHeaderLength(file: source, headerLength: headerLength, fileSize: fileSize)
        }
        dataStart = 8 + Int(headerLength)
        let header = data.withUnsafeBytes { [UInt8]($0[8..<(8 + Int(headerLength))]) }
        let (metadata, entries) = try Self.parseHeader(header, dataCount: fileSize - dataStart, source: source)
        self.metadata = metadata
        self.entries = entries
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    /// The entry for `name`, or an error listing the names closest to it.
    public func entry(named name: String) throws -> Entry {
        if let position = index[name] { return entries[position] }
        // The likeliest intended names share the longest prefix (same block, same layer).
        func sharedPrefix(_ other: String) -> Int { zip(name, other).prefix { $0 == $1 }.count }
        let closest = entries.map(\.name).enumerated()
            .sorted { (sharedPrefix($0.element), -$0.offset) > (sharedPrefix($1.element), -$1.offset) }
            .prefix(5).map(\.element)
        throw SafetensorsError.missingTensor(file: source, tensor: name, available: Array(closest), total: entries.count)
    }

    /// The tensor's values as `Float`: F32 is copied, F16 and BF16 are widened exactly.
    ///
    /// - Parameters:
    ///   - name: The tensor's name in the header.
    ///   - expected: If given, the shape the tensor must have.
    public func floats(_ name: String, shape expected: [Int]? = nil) throws -> [Float] {
        let entry = try checkedEntry(name, shape: expected, accepting: [.float32, .float16, .bfloat16])
        switch entry.dtype {
        case .float32: return copy(entry, as: Float.self)
        case .float16: return copy(entry, as: UInt16.self, converting: Self.float(fromHalf:))
        default: return copy(entry, as: UInt16.self, converting: Self.float(fromBFloat16:))
        }
    }

    /// The tensor's values as `Int32` (dtype I32 only).
    public func int32s(_ name: String, shape expected: [Int]? = nil) throws -> [Int32] {
        copy(try checkedEntry(name, shape: expected, accepting: [.int32]), as: Int32.self)
    }

    /// The tensor's values as `Int64`: I64 is copied, I32 is widened (PyTorch labels are I64,
    /// index tables exported from NumPy are often I32).
    public func int64s(_ name: String, shape expected: [Int]? = nil) throws -> [Int64] {
        let entry = try checkedEntry(name, shape: expected, accepting: [.int64, .int32])
        if entry.dtype == .int32 { return copy(entry, as: Int32.self, converting: { Int64($0) }) }
        return copy(entry, as: Int64.self)
    }

    /// IEEE binary16 bits to `Float`; exact, subnormals included.
    public static func float(fromHalf bits: UInt16) -> Float {
        let sign: UInt32 = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            // Zero or subnormal: mantissa · 2⁻²⁴, exactly representable as a normal Float.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign != 0 ? -magnitude : magnitude
        case 0x1F:
            // Infinity or NaN; the NaN payload is kept in the top mantissa bits.
            return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13)
        default:
            // Rebias the exponent from 15 to 127.
            return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
        }
    }

    /// bfloat16 bits to `Float`: bfloat16 is the top half of a binary32, so this is exact.
    public static func float(fromBFloat16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    // MARK: Private

    private func checkedEntry(_ name: String, shape expected: [Int]?, accepting dtypes: [SafetensorsDType]) throws -> Entry {
        let entry = try entry(named: name)
        guard dtypes.contains(entry.dtype) else {
            throw SafetensorsError.dtypeMismatch(file: source, tensor: name, actual: entry.dtype.rawValue,
                                                 accepted: dtypes.map(\.rawValue))
        }
        if let expected, expected != entry.shape {
            throw SafetensorsError.shapeMismatch(file: source, tensor: name, expected: expected, actual: entry.shape)
        }
        return entry
    }

    /// The entry's bytes as `Element`s, in one copy.
    private func copy<Element>(_ entry: Entry, as _: Element.Type) -> [Element] {
        [Element](unsafeUninitializedCapacity: entry.count) { buffer, initialized in
            contents.withUnsafeBytes { raw in
                let start = dataStart + entry.byteRange.lowerBound, end = dataStart + entry.byteRange.upperBound
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<end]))
            }
            initialized = entry.count
        }
    }

    /// The entry's elements read as `Stored` and converted, without an intermediate array.
    private func copy<Stored, Element>(_ entry: Entry, as _: Stored.Type,
                                       converting convert: (Stored) -> Element) -> [Element] {
        contents.withUnsafeBytes { raw in
            let start = dataStart + entry.byteRange.lowerBound, stride = MemoryLayout<Stored>.size
            return (0..<entry.count).map { convert(raw.loadUnaligned(fromByteOffset: start + $0 * stride, as: Stored.self)) }
        }
    }

    /// Validates the header JSON against a data section of `dataCount` bytes.
    private static func parseHeader(_ header: [UInt8], dataCount: Int, source: String)
        throws -> (metadata: [String: String], entries: [Entry]) {
        // Validate UTF-8 once so the parser can copy string bytes through unchecked.
        var iterator = header.makeIterator(), decoder = UTF8()
        decoding: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: break decoding
            case .error: throw SafetensorsError.badHeader(file: source, reason: "is not valid UTF-8")
            }
        }
        let json: HeaderJSON
        do {
            json = try HeaderJSONParser.parse(header)
        } catch let error as HeaderJSONError {
            throw SafetensorsError.badHeader(file: source, reason: "is not valid JSON: \(error.message)")
        }
        guard case .object(let members) = json else {
            throw SafetensorsError.badHeader(file: source, reason: "is \(json.kindDescription), not a JSON object "
                                             + "mapping tensor names to {dtype, shape, data_offsets}")
        }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try parseMetadata(value, source: source)
            } else {
                entries.append(try parseEntry(name, value, dataCount: dataCount, source: source))
            }
        }
        try checkOverlaps(entries, source: source)
        return (metadata, entries)
    }

    private static func parseMetadata(_ value: HeaderJSON, source: String) throws -> [String: String] {
        if case .null = value { return [:] }
        guard case .object(let members) = value else {
            throw SafetensorsError.badMetadata(file: source, key: "__metadata__", reason: "is \(value.kindDescription), not an object")
        }
        var metadata: [String: String] = [:]
        for (key, item) in members {
            guard case .string(let text) = item else {
                throw SafetensorsError.badMetadata(file: source, key: key, reason: "is \(item.kindDescription), not a string")
            }
            metadata[key] = text
        }
        return metadata
    }

    private static func parseEntry(_ name: String, _ value: HeaderJSON, dataCount: Int, source: String) throws -> Entry {
        func bad(_ reason: String) -> SafetensorsError { .badEntry(file: source, tensor: name, reason: reason) }
        guard case .object(let fields) = value else {
            throw bad("is \(value.kindDescription), not an object with dtype, shape and data_offsets")
        }
        func field(_ key: String) throws -> HeaderJSON {
            guard let found = fields.first(where: { $0.key == key }) else { throw bad("has no \"\(key)\" field") }
            return found.value
        }
        func integer(_ value: HeaderJSON, _ what: String) throws -> Int {
            switch value.nonNegativeInteger {
            case .success(let integer): return integer
            case .failure(let error): throw bad("has \(what) \(error.message)")
            }
        }

        let dtypeValue = try field("dtype")
        guard case .string(let dtypeName) = dtypeValue else { throw bad("has dtype \(dtypeValue.kindDescription), not a string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            let known = SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw bad("has unknown dtype \"\(dtypeName.prefix(40))\" (known: \(known))")
        }

        let shapeValue = try field("shape")
        guard case .array(let dimensions) = shapeValue else { throw bad("has shape \(shapeValue.kindDescription), not an array") }
        let shape = try dimensions.enumerated().map { try integer($1, "shape[\($0)] =") }
        // Overflow-checked: a hostile shape must not wrap around to a small, "valid" byte count.
        var byteCount = dtype.byteSize
        for dimension in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw bad("has shape \(shape), whose size overflows a 64-bit integer") }
            byteCount = product
        }

        let offsetsValue = try field("data_offsets")
        guard case .array(let offsets) = offsetsValue, offsets.count == 2 else {
            throw bad("has data_offsets \(offsetsValue.kindDescription), not two integers [begin, end]")
        }
        let begin = try integer(offsets[0], "data_offsets begin"), end = try integer(offsets[1], "data_offsets end")
        guard begin <= end else { throw bad("has data_offsets [\(begin), \(end)] whose begin is after its end") }
        guard end <= dataCount else {
            throw bad("has data_offsets end \(end) beyond the \(dataCount)-byte data section (the file may be truncated)")
        }
        guard end - begin == byteCount else {
            throw bad("has \(end - begin) bytes in data_offsets [\(begin), \(end)], but shape \(shape) of \(dtypeName) "
                      + "needs \(byteCount)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
    }

    /// Throws if two non-empty byte ranges intersect (empty tensors occupy no bytes).
    private static func checkOverlaps(_ entries: [Entry], source: String) throws {
        let sorted = entries.filter { !$0.byteRange.isEmpty }.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        guard var furthest = sorted.first else { return }
        for entry in sorted.dropFirst() {
            if entry.byteRange.lowerBound < furthest.byteRange.upperBound {
                throw SafetensorsError.overlappingTensors(file: source, first: furthest.name, second: entry.name)
            }
            if entry.byteRange.upperBound > furthest.byteRange.upperBound { furthest = entry }
        }
    }
}
