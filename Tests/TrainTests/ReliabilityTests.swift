import FileSystem
import Foundation
import Tensors
import Testing
@testable import Train

/// Failing disks under a real (tiny) training run: each failure stops the run with a message that
/// names the path, the errno in words and what to do, and what was saved before stays loadable.
@Suite struct ReliabilityTests {
    func trainer(_ folder: URL) throws -> Pretrainer {
        try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                       runFolder: folder, workers: 2, report: { _ in })
    }

    func leftovers(_ folder: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".tmp") }
    }

    @Test(arguments: [("write", ENOSPC, "No space left on device (ENOSPC)"), ("flush to disk", EIO, "Input/output error (EIO)"),
                      ("rename into place", EACCES, "Permission denied (EACCES)")])
    func aFailedCheckpointWriteKeepsThePreviousOne(operation: String, code: Int32, cause: String) throws {
        let folder = try TinyRun.folder("disk-\(code)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try trainer(folder)
        // The epoch-1 checkpoint is written whole; the epoch-2 one fails.
        FaultInjection.add(.init(pathFragment: folder.lastPathComponent + "/checkpoint_0002", operation: operation, code: code))
        defer { FaultInjection.removeAll(matching: folder.lastPathComponent + "/checkpoint_0002") }
        #expect {
            try trainer.run()
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("cannot \(operation) \(folder.path)/checkpoint_0002.safetensors: \(cause)")
                && text.contains("the last good checkpoint, \(folder.path)/checkpoint_0001.safetensors, is intact")
                && text.contains("--resume auto")
        }
        #expect(TrainingCheckpoint.candidates(in: folder).map(\.lastPathComponent) == ["checkpoint_0001.safetensors"])
        #expect(try TrainingCheckpoint.read(folder.appendingPathComponent("checkpoint_0001.safetensors")).position.epoch == 1)
        #expect(try leftovers(folder).isEmpty)
    }

    @Test func aFailedMetricsLineStopsTheRunAndLeavesWholeLines() throws {
        let folder = try TinyRun.folder("metrics-eio")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try trainer(folder)
        let fragment = folder.lastPathComponent + "/metrics.jsonl"
        FaultInjection.add(.init(pathFragment: fragment, operation: "write", code: EIO, skip: 3))
        defer { FaultInjection.removeAll(matching: fragment) }
        #expect {
            try trainer.run()
        } throws: { error in
            "\(error)".hasPrefix("cannot write \(folder.path)/metrics.jsonl: Input/output error (EIO)")
                && "\(error)".contains("The metrics up to this line are intact")
        }
        let lines = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        #expect(lines.hasSuffix("\n"))
        let parsed = lines.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) }
        #expect(parsed.count == 3 && parsed.allSatisfy { $0 != nil })
    }

    @Test func aSecondRunOnTheSameFolderIsRefusedNamingTheFirst() throws {
        let folder = try TinyRun.folder("locked")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try trainer(folder)
        #expect {
            _ = try trainer(folder)
        } throws: { error in
            "\(error)" == "\(folder.path) is in use by another mocov3-cl run (PID \(getpid())); wait for it to finish, "
                + "stop it, or choose another --output"
        }
        _ = try first.run()
        _ = try trainer(folder)   // free again once the first has finished
    }

    @Test func anUnwritableRunFolderIsNamed() throws {
        #expect {
            _ = try trainer(URL(fileURLWithPath: "/proc/forbidden/run"))
        } throws: { error in
            "\(error)".hasPrefix("cannot create the folder /proc/forbidden/run: ") && !"\(error)".contains("NSCocoaErrorDomain")
        }
    }

    @Test func savePolicyParsesCountsDurationsAndNever() throws {
        #expect(try SavePolicy(parsing: "500", keep: 2).interval == .iterations(500))
        #expect(try SavePolicy(parsing: "90s", keep: 1).interval == .seconds(90))
        #expect(try SavePolicy(parsing: "10m", keep: 1).interval == .seconds(600))
        #expect(try SavePolicy(parsing: "2h", keep: 1).interval == .seconds(7200))
        #expect(try SavePolicy(parsing: "never", keep: 1).interval == .never)
        #expect(try SavePolicy(parsing: "0", keep: 1).interval == .never)
        for bad in ["-3", "10x", "m", "", "1.5"] {
            #expect(throws: PretrainError.self, "\(bad)") { try SavePolicy(parsing: bad, keep: 1) }
        }
        #expect(throws: PretrainError.self) { try SavePolicy(parsing: "10m", keep: 0) }
    }

    @Test func midEpochSavesKeepTheNewestAndEveryEpochEnd() throws {
        let folder = try TinyRun.folder("save-every")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                   runFolder: folder, workers: 2, savePolicy: SavePolicy(interval: .iterations(1), keep: 2),
                                   report: { _ in })
        var calls = 0
        _ = try first.run(shouldStop: { calls += 1; return calls >= 8 })   // stops at epoch 2, batch 3
        #expect(TrainingCheckpoint.candidates(in: folder).map(\.lastPathComponent)
            == ["checkpoint_0001_000003.safetensors", "checkpoint_0001_000002.safetensors", "checkpoint_0001.safetensors"])
        let (contents, _) = try TrainingCheckpoint.newestReadable(in: folder)
        let second = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                    runFolder: folder, resume: contents, workers: 2,
                                    savePolicy: SavePolicy(interval: .iterations(1), keep: 2), report: { _ in })
        #expect(try second.run().completed)
        // After the last epoch end, the mid-epoch checkpoints before it are gone.
        #expect(TrainingCheckpoint.candidates(in: folder).map(\.lastPathComponent)
            == ["checkpoint_0002.safetensors", "checkpoint_0001.safetensors"])
    }

    /// The fields of metrics.jsonl that do not depend on timing, line by line.
    func deterministicMetrics(_ folder: URL) throws -> [String] {
        let text = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            var object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for key in ["images_per_second", "data_seconds", "seconds"] { object.removeValue(forKey: key) }
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }
    }

    /// A resume cuts metrics.jsonl back to its checkpoint (a kill -9 leaves lines after it, the
    /// last one possibly torn), restores the gradient monitor's history, and redoes the epoch's
    /// evaluation that followed an epoch-end save: the log equals an uninterrupted run's.
    @Test(arguments: [6, 5])
    func resumeCutsTheMetricsBackAndRestoresTheMonitor(stopAfter: Int) throws {
        let straightFolder = try TinyRun.folder("metrics-straight"), folder = try TinyRun.folder("metrics-resumed")
        defer {
            try? FileManager.default.removeItem(at: straightFolder)
            try? FileManager.default.removeItem(at: folder)
        }
        var configuration = TinyRun.configuration
        configuration.epochs = 3
        let straight = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                      runFolder: straightFolder, workers: 2, report: { _ in })
        _ = try straight.run()

        let first = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                   runFolder: folder, workers: 2, report: { _ in })
        var calls = 0
        // 6: mid-epoch (epoch 2, batch 2); 5: the epoch-1 end, whose evaluation was written after the save.
        _ = try first.run(shouldStop: { calls += 1; return calls >= stopAfter })
        // What a kill -9 after more iterations leaves: lines past the checkpoint, the last one torn.
        let log = try FileHandle(forWritingTo: folder.appendingPathComponent("metrics.jsonl"))
        try log.seekToEnd()
        try log.write(contentsOf: Data("{\"type\":\"iteration\",\"epoch\":9}\n{\"type\":\"itera".utf8))
        try log.close()
        let (contents, _) = try TrainingCheckpoint.newestReadable(in: folder)
        #expect(contents.gradientHistory.count == first.gradients.layers.count)
        let second = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                    runFolder: folder, resume: contents, workers: 2, report: { _ in })
        #expect(second.gradients.recentNorms == first.gradients.recentNorms)
        _ = try second.run()
        #expect(try deterministicMetrics(folder) == deterministicMetrics(straightFolder))
        #expect(second.gradients.recentNorms == straight.gradients.recentNorms)
    }
}
