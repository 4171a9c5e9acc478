import Foundation

/// An exclusive lock on a run folder (`flock` on `<folder>/.lock`, which holds the owner's PID),
/// so two runs pointed at the same `--output` cannot interleave checkpoints and metrics. The
/// kernel drops the lock when the process ends, however it ends (`kill -9` included), so a stale
/// `.lock` file never blocks a resume.
public final class RunLock {
    public static let fileName = ".lock"
    public let url: URL
    let descriptor: Int32

    public struct Held: Error, CustomStringConvertible {
        public let folder: String
        public let pid: String

        public var description: String {
            "\(folder) is in use by another mocov3-cl run (PID \(pid)); wait for it to finish, stop it, "
                + "or choose another --output"
        }
    }

    /// Takes the lock or throws ``Held`` naming the PID that has it.
    public init(folder: URL) throws {
        url = folder.appendingPathComponent(Self.fileName)
        descriptor = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FileSystemError("create the lock file", path: url.path, code: errno) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            close(descriptor)
            guard code == EWOULDBLOCK else { throw FileSystemError("lock", path: url.path, code: code) }
            let pid = String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Held(folder: folder.path, pid: pid.isEmpty ? "unknown" : pid)
        }
        let pid = "\(getpid())\n"
        ftruncate(descriptor, 0)
        _ = pid.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
