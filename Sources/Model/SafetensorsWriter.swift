import FileSystem
import Foundation

/// Writes tensors to a safetensors file that PyTorch's `safetensors` (and so timm) loads.
///
/// Tensors are laid out contiguously in the order added, and the header lists them in that
/// order; the JSON is padded with spaces so the data section starts at a multiple of 8 bytes, as
/// the reference writer does (so readers can map F64/I64 data aligned). The file is written
/// atomically: to a temporary file in the same directory, flushed with `fsync`, then renamed over
/// the destination, so a checkpoint cut off mid-write never replaces a good one.
///
/// ```swift
/// var writer = SafetensorsWriter(metadata: ["format": "pt"])
/// try writer.add("module.base_encoder.cls_token", shape: [1, 1, 768], floats: clsToken)
/// try writer.write(to: url)
/// ```
public struct SafetensorsWriter: Sendable {
    private enum Values: Sendable {
        case float32([Float]), int32([Int32]), int64([Int64])
    }

    private struct Pending: Sendable {
        let name: String
        let shape: [Int]
        let dtype: SafetensorsDType
        let values: Values
    }

    /// String pairs stored as the header's `"__metadata__"` (written with sorted keys).
    public var metadata: [String: String]
    private var tensors: [Pending] = []
    /// Tensors added so far.
    public var tensorCount: Int { tensors.count }
    private var names = Set<String>()

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    /// Adds an F32 tensor. Throws if `floats.count` is not the shape's element count or the name
    /// is already used.
    public mutating func add(_ name: String, shape: [Int], floats: [Float]) throws {
        try append(name, shape: shape, dtype: .float32, count: floats.count, values: .float32(floats))
    }

    /// Adds an I32 tensor.
    public mutating func add(_ name: String, shape: [Int], int32s: [Int32]) throws {
        try append(name, shape: shape, dtype: .int32, count: int32s.count, values: .int32(int32s))
    }

    /// Adds an I64 tensor (PyTorch's default integer type, e.g. class labels).
    public mutating func add(_ name: String, shape: [Int], int64s: [Int64]) throws {
        try append(name, shape: shape, dtype: .int64, count: int64s.count, values: .int64(int64s))
    }

    /// Every entry of `table` with its slice of the flat `values`, under `prefix` + its name;
    /// `num_batches_tracked` entries as I64, as PyTorch saves them (the flat buffers keep them as
    /// Float).
    public mutating func add(_ table: ParameterTable, values: [Float], prefix: String = "") throws {
        for entry in table.entries {
            let slice = Array(values[entry.offset..<(entry.offset + entry.count)])
            if entry.name.hasSuffix("num_batches_tracked") {
                try add(prefix + entry.name, shape: entry.shape, int64s: slice.map { Int64($0) })
            } else {
                try add(prefix + entry.name, shape: entry.shape, floats: slice)
            }
        }
    }

    /// Writes F32 tensors in the given order; see ``write(to:)``.
    public static func write(tensors: [(name: String, shape: [Int], values: [Float])],
                             metadata: [String: String] = [:], to url: URL) throws {
        var writer = SafetensorsWriter(metadata: metadata)
        for tensor in tensors { try writer.add(tensor.name, shape: tensor.shape, floats: tensor.values) }
        try writer.write(to: url)
    }

    /// The header JSON, space-padded to a multiple of 8 bytes.
    public func header() -> [UInt8] {
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(Self.quoted($0.key)):\(Self.quoted($0.value))" }
            members.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            let end = offset + tensor.shape.reduce(tensor.dtype.byteSize, *)
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            members.append("\(Self.quoted(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],"
                           + "\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var bytes = Array("{\(members.joined(separator: ","))}".utf8)
        bytes += repeatElement(UInt8(ascii: " "), count: (8 - bytes.count % 8) % 8)
        return bytes
    }

    /// Writes the file atomically, replacing any file at `url` only once the new one is complete
    /// and flushed to disk.
    public func write(to url: URL) throws {
        let header = header()
        guard header.count <= SafetensorsFile.maximumHeaderLength else {
            throw SafetensorsError.invalidTensor(file: url.path, tensor: tensors.last?.name ?? "",
                                                 reason: "the header would exceed \(SafetensorsFile.maximumHeaderLength) bytes")
        }
        try FileSystem.writeAtomically(to: url) { file in
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try file.write($0) }
            try header.withUnsafeBytes { try file.write($0) }
            for tensor in tensors {
                switch tensor.values {
                case .float32(let values): try values.withUnsafeBytes { try file.write($0) }
                case .int32(let values): try values.withUnsafeBytes { try file.write($0) }
                case .int64(let values): try values.withUnsafeBytes { try file.write($0) }
                }
            }
        }
    }

    // MARK: Private

    private mutating func append(_ name: String, shape: [Int], dtype: SafetensorsDType, count: Int, values: Values) throws {
        func invalid(_ reason: String) -> SafetensorsError { .invalidTensor(file: "<writer>", tensor: name, reason: reason) }
        guard name != "__metadata__" else { throw invalid("the name is reserved for the header's metadata") }
        guard !names.contains(name) else { throw invalid("a tensor with this name was already added") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw invalid("shape \(shape) has a negative dimension") }
        guard shape.reduce(1, *) == count else {
            throw invalid("shape \(shape) holds \(shape.reduce(1, *)) elements but \(count) values were given")
        }
        names.insert(name)
        tensors.append(Pending(name: name, shape: shape, dtype: dtype, values: values))
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped (RFC 8259 §7);
    /// other characters, including non-ASCII, are written as UTF-8.
    private static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            case "\u{00}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

