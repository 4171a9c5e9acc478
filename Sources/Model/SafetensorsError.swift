/// Why a safetensors file could not be read or written.
///
/// Every message names the file (and the tensor, where there is one), says what was wrong and
/// what to do, because the usual cause is a checkpoint from elsewhere (PyTorch, timm, a run that
/// was cut off) and the person reading the message needs to know which file to replace.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or mapped.
    case unreadable(file: String, reason: String)
    /// Fewer than the 8 bytes of the header-length prefix.
    case tooShort(file: String, byteCount: Int)
    /// The header-length prefix is absurd or points past the end of the file.
    case badHeaderLength(file: String, headerLength: UInt64, fileSize: Int)
    /// The header is not UTF-8, not JSON, or not a JSON object.
    case badHeader(file: String, reason: String)
    /// A tensor's header entry is malformed or inconsistent with the data section.
    case badEntry(file: String, tensor: String, reason: String)
    /// Two tensors claim some of the same bytes.
    case overlappingTensors(file: String, first: String, second: String)
    /// `__metadata__` is not an object of string values.
    case badMetadata(file: String, key: String, reason: String)
    /// A tensor the caller asked for is not in the file.
    case missingTensor(file: String, tensor: String, available: [String], total: Int)
    /// A tensor's shape differs from the one the caller expects.
    case shapeMismatch(file: String, tensor: String, expected: [Int], actual: [Int])
    /// A tensor's dtype cannot be read by the accessor the caller used.
    case dtypeMismatch(file: String, tensor: String, actual: String, accepted: [String])
    /// A tensor handed to the writer is inconsistent (shape versus value count, duplicate name).
    case invalidTensor(file: String, tensor: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read safetensors file (\(reason)); check the path and permissions"
        case let .tooShort(file, byteCount):
            return "\(file): \(byteCount) bytes is too short for a safetensors file, which starts with an 8-byte "
                + "header length; the file is empty or truncated, re-export or re-download it"
        case let .badHeaderLength(file, headerLength, fileSize):
            let limit = SafetensorsFile.maximumHeaderLength
            let why = headerLength > UInt64(limit)
                ? "exceeds the \(limit)-byte limit" : "runs past the end of the \(fileSize)-byte file"
            return "\(file): header length \(headerLength) \(why); this is not a safetensors file or it is "
                + "truncated, re-export or re-download it"
        case let .badHeader(file, reason):
            return "\(file): the safetensors header \(reason); the file is corrupt or not safetensors, re-export it"
        case let .badEntry(file, tensor, reason):
            return "\(file): tensor \"\(tensor)\" \(reason); the file is corrupt or was written by a broken "
                + "exporter, re-export it"
        case let .overlappingTensors(file, first, second):
            return "\(file): tensors \"\(first)\" and \"\(second)\" overlap in the data section; the file is corrupt, "
                + "re-export it"
        case let .badMetadata(file, key, reason):
            return "\(file): metadata entry \"\(key)\" \(reason); safetensors metadata maps strings to strings, "
                + "re-export the file with string values"
        case let .missingTensor(file, tensor, available, total):
            let listed = available.map { "\"\($0)\"" }.joined(separator: ", ")
            let more = total > available.count ? " and \(total - available.count) more" : ""
            let hint = total == 0 ? "the file holds no tensors" : "available: \(listed)\(more)"
            return "\(file): no tensor named \"\(tensor)\" (\(hint)); check the checkpoint's naming "
                + "(e.g. a missing \"module.\" prefix) or that it matches this model"
        case let .shapeMismatch(file, tensor, expected, actual):
            return "\(file): tensor \"\(tensor)\" has shape \(actual) but \(expected) was expected; the checkpoint "
                + "was made for a different model configuration"
        case let .dtypeMismatch(file, tensor, actual, accepted):
            return "\(file): tensor \"\(tensor)\" has dtype \(actual), but this accessor reads "
                + "\(accepted.joined(separator: ", ")); convert it when exporting (e.g. tensor.float())"
        case let .invalidTensor(file, tensor, reason):
            return "\(file): cannot write tensor \"\(tensor)\": \(reason)"
        }
    }
}
