import Foundation

/// The file operations whose failures a run must report in words and survive: creating folders,
/// atomic replacement (temp file, fsync, rename, fsync of the folder), appending lines. Every
/// call passes through ``FaultInjection`` first, so tests can make any of them fail with a chosen
/// errno (ENOSPC, EIO, EACCES) at a chosen path.
public enum FileSystem {
    /// Creates `url` and its parents if missing.
    public static func createDirectory(_ url: URL) throws {
        try FaultInjection.check("create the folder", url.path)
        do { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) } catch {
            throw FileSystemError.from(error, operation: "create the folder", path: url.path)
                ?? FileSystemError("create the folder", path: url.path, code: EIO)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileSystemError("create the folder", path: url.path, code: ENOTDIR)
        }
    }

    /// Where ``writeAtomically(to:_:)``'s body writes the new contents.
    public struct AtomicWriter {
        let descriptor: Int32
        let path: String

        public func write(_ bytes: UnsafeRawBufferPointer) throws { try FileSystem.writeAll(descriptor, bytes, path: path) }
    }

    /// Writes `url` atomically: `body` fills a temporary file in the same folder (rename is atomic
    /// only within one file system), then fsync, rename over `url`, fsync of the folder. A failure
    /// at any step removes the temporary file and leaves whatever was at `url` untouched.
    public static func writeAtomically(to url: URL, _ body: (AtomicWriter) throws -> Void) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(
            ".\(url.lastPathComponent).\(getpid())-\(String(UInt32.random(in: .min ... .max), radix: 16)).tmp")
        // Failures name the destination the user asked for, not the temporary file beside it.
        try FaultInjection.check("create", url.path)
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FileSystemError("create", path: url.path, code: errno) }
        var renamed = false
        defer { if !renamed { unlink(temporary.path) } }
        do {
            try body(AtomicWriter(descriptor: descriptor, path: url.path))
            try FaultInjection.check("flush to disk", url.path)
            guard fsync(descriptor) == 0 else { throw FileSystemError("flush to disk", path: url.path, code: errno) }
        } catch {
            close(descriptor)
            throw error
        }
        guard close(descriptor) == 0 else { throw FileSystemError("close", path: url.path, code: errno) }
        try FaultInjection.check("rename into place", url.path)
        guard rename(temporary.path, url.path) == 0 else {
            throw FileSystemError("rename into place", path: url.path, code: errno)
        }
        renamed = true
        // The rename is durable only once the folder's entry is on disk too (best effort: some
        // file systems refuse fsync on a folder, and the new file is whole either way).
        let folder = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }

    /// ``writeAtomically(to:_:)`` of one buffer.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        try writeAtomically(to: url) { writer in try data.withUnsafeBytes { try writer.write($0) } }
    }

    /// Writes all of `bytes` to `descriptor` (retrying short writes and EINTR).
    public static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        try FaultInjection.check("write", path)
        var offset = 0
        while offset < bytes.count {
            let written = systemWrite(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw FileSystemError("write", path: path, code: errno)
            }
            offset += written
        }
    }
}

/// A file opened for appending whole lines (`metrics.jsonl`): each line is one `write(2)` with
/// O_APPEND, and a line that fails leaves nothing behind (the file is cut back to its length
/// before it), so a full disk never leaves a torn line.
public final class AppendFile {
    public let url: URL
    let descriptor: Int32

    public init(_ url: URL) throws {
        self.url = url
        try FaultInjection.check("open for appending", url.path)
        descriptor = open(url.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FileSystemError("open for appending", path: url.path, code: errno) }
    }

    deinit { close(descriptor) }

    public func append(_ line: String) throws {
        let length = lseek(descriptor, 0, SEEK_END)
        do {
            try Data(line.utf8).withUnsafeBytes { try FileSystem.writeAll(descriptor, $0, path: url.path) }
        } catch {
            if length >= 0 { ftruncate(descriptor, length) }
            throw error
        }
    }

    /// The file's length in bytes now.
    public var length: Int { Int(lseek(descriptor, 0, SEEK_END)) }

    /// Cuts the file back to `length` bytes (a resume drops the lines written after its checkpoint).
    public func truncate(to length: Int) throws {
        try FaultInjection.check("truncate", url.path)
        guard ftruncate(descriptor, off_t(length)) == 0 else { throw FileSystemError("truncate", path: url.path, code: errno) }
    }

    /// Waits until the appended lines are on disk.
    public func flush() throws {
        guard fsync(descriptor) == 0 else { throw FileSystemError("flush to disk", path: url.path, code: errno) }
    }
}

/// Test hook: makes the file operations above fail with a chosen errno at paths containing a
/// chosen fragment (a test's own temporary folder, so tests running in parallel are unaffected).
public enum FaultInjection {
    public struct Rule: Sendable {
        public let pathFragment: String
        /// Only this operation ("write", "rename into place", …), or every one when nil.
        public let operation: String?
        public let code: Int32
        /// Operations that match and pass before the first failure.
        public var skip: Int
        /// Failures left (then the rule lapses); nil for every later match.
        public var remaining: Int?

        public init(pathFragment: String, operation: String? = nil, code: Int32, skip: Int = 0, remaining: Int? = nil) {
            self.pathFragment = pathFragment
            self.operation = operation
            self.code = code
            self.skip = skip
            self.remaining = remaining
        }
    }

    nonisolated(unsafe) private static var rules: [Rule] = []
    private static let lock = NSLock()

    public static func add(_ rule: Rule) { lock.withLock { rules.append(rule) } }

    public static func removeAll(matching fragment: String) {
        lock.withLock { rules.removeAll { $0.pathFragment == fragment } }
    }

    /// Throws the first matching rule's errno.
    static func check(_ operation: String, _ path: String) throws {
        let code: Int32? = lock.withLock {
            for index in rules.indices where path.contains(rules[index].pathFragment)
                && (rules[index].operation == nil || rules[index].operation == operation) {
                if rules[index].skip > 0 {
                    rules[index].skip -= 1
                    return nil
                }
                if let remaining = rules[index].remaining {
                    guard remaining > 0 else { continue }
                    rules[index].remaining = remaining - 1
                }
                return rules[index].code
            }
            return nil
        }
        if let code { throw FileSystemError(operation, path: path, code: code) }
    }
}

/// write(2), at file scope because inside the types above `write` means their own methods.
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
