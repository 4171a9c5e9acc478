import Foundation

/// A file-system operation that failed, in words a user can act on: what was being done, the
/// path, the cause (`strerror`, and the errno's name) and what to do. Every file the CLI reads or
/// writes reports failures this way, never as an `NSError` dump.
public struct FileSystemError: Error, CustomStringConvertible, Sendable {
    /// What was being done: "write", "create the folder", "rename into place", ….
    public let operation: String
    public let path: String
    public let code: Int32
    /// Added after the cause: what a failure here means for the run (e.g. that the previous
    /// checkpoint is intact).
    public let consequence: String?

    public init(_ operation: String, path: String, code: Int32, consequence: String? = nil) {
        self.operation = operation
        self.path = path
        self.code = code
        self.consequence = consequence
    }

    /// The same failure with what it means for the caller added.
    public func adding(consequence: String) -> FileSystemError {
        FileSystemError(operation, path: path, code: code,
                        consequence: self.consequence.map { $0 + "; " + consequence } ?? consequence)
    }

    public var description: String {
        var text = "cannot \(operation) \(path): \(Self.cause(code))"
        if let consequence { text += ". \(consequence)" }
        if let advice = Self.advice(code) { text += ". \(advice)" }
        return text
    }

    /// `strerror` with the errno's symbolic name: "No space left on device (ENOSPC)".
    public static func cause(_ code: Int32) -> String {
        let name = names[code].map { " (\($0))" } ?? " (errno \(code))"
        return String(cString: strerror(code)) + name
    }

    static let names: [Int32: String] = [
        ENOENT: "ENOENT", EACCES: "EACCES", EPERM: "EPERM", ENOSPC: "ENOSPC", EDQUOT: "EDQUOT", EIO: "EIO",
        EROFS: "EROFS", EEXIST: "EEXIST", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EMFILE: "EMFILE", ENFILE: "ENFILE",
        ENAMETOOLONG: "ENAMETOOLONG", EXDEV: "EXDEV", EBUSY: "EBUSY", EFBIG: "EFBIG", ENOTEMPTY: "ENOTEMPTY",
        EINVAL: "EINVAL", ELOOP: "ELOOP", ESTALE: "ESTALE", EAGAIN: "EAGAIN",
    ]

    /// What to do about the common causes.
    public static func advice(_ code: Int32) -> String? {
        switch code {
        case ENOSPC, EDQUOT:
            return "The disk (or your quota) is full: free space there or point the run at another disk, then run again"
        case EACCES, EPERM:
            return "No permission: choose a folder you can write to, or fix its permissions"
        case EROFS: return "That file system is read-only: choose a writable folder"
        case ENOENT: return "A folder on that path does not exist: create it, or check the path for a typo"
        case ENOTDIR: return "A part of that path is a file, not a folder: check the path"
        case EISDIR: return "That path is a folder, not a file: name a file inside it"
        case EIO: return "The storage device reported an I/O error: check the disk (dmesg) before trusting files on it"
        case EMFILE, ENFILE: return "Too many open files: raise the limit (ulimit -n) or close other programs"
        case ENAMETOOLONG: return "The path is too long: choose a shorter one"
        case EFBIG: return "The file would exceed the file system's size limit: choose another disk"
        default: return nil
        }
    }

    /// `error` as a ``FileSystemError`` when it is a file-system failure of Foundation (a
    /// `CocoaError` or an `NSError` with a POSIX code, possibly underlying), else nil.
    public static func from(_ error: Error, operation: String, path: String) -> FileSystemError? {
        if let error = error as? FileSystemError { return error }
        guard let code = posixCode(of: error) else { return nil }
        return FileSystemError(operation, path: path, code: code)
    }

    /// The POSIX errno behind a Foundation file error, if any.
    public static func posixCode(of error: Error) -> Int32? {
        if let error = error as? POSIXError { return error.code.rawValue }
        let error = error as NSError
        if error.domain == NSPOSIXErrorDomain { return Int32(error.code) }
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return Int32(underlying.code)
        }
        guard error.domain == NSCocoaErrorDomain else { return nil }
        switch CocoaError.Code(rawValue: error.code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return ENOENT
        case .fileReadNoPermission, .fileWriteNoPermission: return EACCES
        case .fileWriteOutOfSpace: return ENOSPC
        case .fileWriteVolumeReadOnly: return EROFS
        case .fileWriteFileExists: return EEXIST
        case .fileReadTooLarge: return EFBIG
        case .fileReadInvalidFileName, .fileWriteInvalidFileName: return EINVAL
        default: return EIO
        }
    }

    /// Words for any error a command ends with: a file-system failure in the form above, an error
    /// type with its own description as is. The path of a Foundation error comes from its user
    /// info when it has one.
    public static func describe(_ error: Error) -> String {
        if let error = error as? FileSystemError { return error.description }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain, let code = posixCode(of: error) {
            let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
                ?? "(a file)"
            return FileSystemError("use", path: path, code: code).description
        }
        return "\(error)"
    }
}
