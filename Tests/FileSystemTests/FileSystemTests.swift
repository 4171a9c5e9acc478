import FileSystem
import Foundation
import Testing

/// Failures of the file operations, injected (ENOSPC, EIO, EACCES) or real: the message names
/// the path, the errno in words and what to do, and nothing already on disk is lost.
@Suite struct FileSystemTests {
    func folder(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fs-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        try FileSystem.createDirectory(url)
        return url
    }

    @Test func messagesNameThePathTheCauseAndWhatToDo() {
        let full = FileSystemError("write", path: "/data/run/checkpoint_0002.safetensors", code: ENOSPC,
                                   consequence: "checkpoint_0001.safetensors is intact")
        #expect(full.description == "cannot write /data/run/checkpoint_0002.safetensors: No space left on device (ENOSPC). "
            + "checkpoint_0001.safetensors is intact. The disk (or your quota) is full: free space there or point the "
            + "run at another disk, then run again")
        #expect(FileSystemError("write", path: "/x", code: EIO).description.contains("Input/output error (EIO)"))
        #expect(FileSystemError("open", path: "/x", code: EACCES).description.contains("No permission"))
    }

    @Test func foundationErrorsBecomeWords() throws {
        do {
            _ = try Data(contentsOf: URL(fileURLWithPath: "/nonexistent-\(getpid())/file"))
            Issue.record("reading a missing file succeeded")
        } catch {
            let text = FileSystemError.describe(error)
            #expect(text.contains("/nonexistent-\(getpid())/file") && text.contains("(ENOENT)"), "\(text)")
            #expect(!text.contains("NSCocoaErrorDomain") && !text.contains("UserInfo"))
        }
    }

    @Test func creatingAFolderUnderProcFails() {
        #expect(throws: FileSystemError.self) { try FileSystem.createDirectory(URL(fileURLWithPath: "/proc/forbidden/run")) }
        do { try FileSystem.createDirectory(URL(fileURLWithPath: "/proc/forbidden/run")) } catch {
            #expect("\(error)".hasPrefix("cannot create the folder /proc/forbidden/run: "), "\(error)")
        }
    }

    @Test(arguments: [("write", ENOSPC), ("flush to disk", EIO), ("rename into place", EACCES), ("create", ENOSPC)])
    func aFailedAtomicWriteLeavesThePreviousFile(operation: String, code: Int32) throws {
        let root = try folder("atomic-\(operation.replacingOccurrences(of: " ", with: "-"))")
        defer { try? FileManager.default.removeItem(at: root) }
        let url = root.appendingPathComponent("state.bin")
        try FileSystem.writeAtomically(Data("first".utf8), to: url)
        FaultInjection.add(.init(pathFragment: root.lastPathComponent, operation: operation, code: code))
        defer { FaultInjection.removeAll(matching: root.lastPathComponent) }
        do {
            try FileSystem.writeAtomically(Data("second, longer".utf8), to: url)
            Issue.record("the injected \(code) did not fail the write")
        } catch let error as FileSystemError {
            #expect(error.code == code && error.operation == operation)
            #expect(error.path.contains(root.path))
        }
        #expect(try Data(contentsOf: url) == Data("first".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path) == ["state.bin"], "a temporary file was left")
    }

    @Test func aFailedAppendLeavesNoTornLine() throws {
        let root = try folder("append")
        defer { try? FileManager.default.removeItem(at: root) }
        let url = root.appendingPathComponent("metrics.jsonl")
        let file = try AppendFile(url)
        try file.append("{\"a\":1}\n")
        FaultInjection.add(.init(pathFragment: root.lastPathComponent, operation: "write", code: ENOSPC, remaining: 1))
        defer { FaultInjection.removeAll(matching: root.lastPathComponent) }
        #expect(throws: FileSystemError.self) { try file.append("{\"a\":2}\n") }
        try file.append("{\"a\":3}\n")
        #expect(try String(contentsOf: url, encoding: .utf8) == "{\"a\":1}\n{\"a\":3}\n")
    }

    @Test func aSecondLockOnAFolderNamesTheFirstPID() throws {
        let root = try folder("lock")
        defer { try? FileManager.default.removeItem(at: root) }
        var first: RunLock? = try RunLock(folder: root)
        do {
            _ = try RunLock(folder: root)
            Issue.record("a second lock was granted")
        } catch let held as RunLock.Held {
            #expect(held.pid == "\(getpid())")
            #expect(held.description.contains("in use by another mocov3-cl run (PID \(getpid()))"))
        }
        first = nil
        _ = first
        _ = try RunLock(folder: root)   // released with the first
    }

    @Test func skipAndRemainingSelectWhichOperationsFail() throws {
        let root = try folder("rules")
        defer { try? FileManager.default.removeItem(at: root) }
        FaultInjection.add(.init(pathFragment: root.lastPathComponent, operation: "rename into place", code: EIO,
                                 skip: 1, remaining: 1))
        defer { FaultInjection.removeAll(matching: root.lastPathComponent) }
        let url = root.appendingPathComponent("f")
        try FileSystem.writeAtomically(Data("1".utf8), to: url)                       // skipped
        #expect(throws: FileSystemError.self) { try FileSystem.writeAtomically(Data("2".utf8), to: url) }
        try FileSystem.writeAtomically(Data("3".utf8), to: url)                       // lapsed
        #expect(try Data(contentsOf: url) == Data("3".utf8))
    }
}
