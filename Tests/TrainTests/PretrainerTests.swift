import Datasets
import Foundation
import Tensors
import Model
import Testing
import TestSupport
@testable import Train

@Suite struct PretrainerTests {
    func parameters(_ trainer: Pretrainer) throws -> [Float] { try trainer.model.backend.download(trainer.model.parameterTensor) }

    @Test func trainsEndToEndWritingMetricsAndCheckpoints() throws {
        let folder = try TinyRun.folder("e2e")
        defer { try? FileManager.default.removeItem(at: folder) }
        let events = EventLog()
        let trainer = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: events.append)
        let before = try parameters(trainer)
        let summary = try trainer.run()
        #expect(summary.completed)
        #expect(summary.position == TrainingPosition(epoch: 2, batch: 0, step: 8))
        #expect(summary.knnTop1.keys.sorted() == [0, 1, 2])
        #expect(try parameters(trainer) != before)
        let iterations = events.iterations
        #expect(iterations.count == 8)
        #expect(iterations.first?.learningRate == 0)                      // warmup starts at lr 0
        #expect(iterations.allSatisfy { $0.loss.isFinite && $0.gradientNorms.count == 6 })
        #expect(iterations.dropFirst().allSatisfy { $0.knnMonitor != nil })
        let lines = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        #expect(lines.filter { $0.contains("\"type\":\"iteration\"") }.count == 8)
        #expect(lines.filter { $0.contains("\"knn_top1\"") }.count == 3)
        for line in lines { #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil) }
        #expect(TrainingCheckpoint.candidates(in: folder).map(\.lastPathComponent)
            == ["checkpoint_0002.safetensors", "checkpoint_0001.safetensors"])
        // The monitor's device bank, updated a batch at a time (and wrapping), equals the queue.
        let bank = try #require(trainer.bank), deviceBank = try #require(trainer.deviceBank)
        #expect(bank.filled == bank.length)
        #expect(try trainer.model.backend.download(deviceBank.features) == bank.features)
        var labels = [Int32](repeating: -2, count: bank.length)
        try labels.withUnsafeMutableBytes { try trainer.model.backend.download(deviceBank.labels, intoBytes: $0) }
        #expect(labels == bank.labels)
    }

    /// The same run on PoCL: the loop, the optimizer, the dense kNN monitor and the kNN
    /// evaluation all on the OpenCL device, matching the host run's losses and kNN figures.
    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func theRunOnOpenCLMatchesTheHost() throws {
        let hostFolder = try TinyRun.folder("host"), clFolder = try TinyRun.folder("opencl")
        defer {
            try? FileManager.default.removeItem(at: hostFolder)
            try? FileManager.default.removeItem(at: clFolder)
        }
        let (hostEvents, clEvents) = (EventLog(), EventLog())
        let host = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                  runFolder: hostFolder, workers: 2, report: hostEvents.append)
        let opencl = try Pretrainer(configuration: TinyRun.configuration, backend: TestDevices.backend(),
                                    data: TinyRun.data(), runFolder: clFolder, workers: 2, report: clEvents.append)
        let (hostSummary, clSummary) = (try host.run(), try opencl.run())
        #expect(clSummary.completed)
        for (a, b) in zip(clEvents.iterations, hostEvents.iterations) {
            #expect(abs(a.loss - b.loss) <= 1e-3 * abs(b.loss), "loss \(a.loss) vs \(b.loss) at step \(b.step)")
        }
        #expect(clEvents.iterations.dropFirst().allSatisfy { $0.knnMonitor != nil })
        #expect(clSummary.knnTop1.keys.sorted() == hostSummary.knnTop1.keys.sorted())
        // 12 test images: float rounding may move one of them.
        for (epoch, top1) in hostSummary.knnTop1 {
            #expect(abs((clSummary.knnTop1[epoch] ?? -1) - top1) <= 1.0 / 12 + 1e-9, "epoch \(epoch)")
        }
    }

    /// An interrupted run resumed from its checkpoint ends with bit-identical weights, optimizer
    /// state and monitor bank to a run that was never interrupted (host backend).
    @Test(arguments: [3, 4, 6]) func resumeIsBitIdenticalToAnUninterruptedRun(stopAfter: Int) throws {
        let straightFolder = try TinyRun.folder("straight"), splitFolder = try TinyRun.folder("split")
        defer {
            try? FileManager.default.removeItem(at: straightFolder)
            try? FileManager.default.removeItem(at: splitFolder)
        }
        let straight = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                      runFolder: straightFolder, workers: 2, report: { _ in })
        _ = try straight.run()

        let first = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                   runFolder: splitFolder, workers: 1, report: { _ in })
        var calls = 0
        let partial = try first.run(shouldStop: { calls += 1; return calls >= stopAfter })
        #expect(!partial.completed)
        // shouldStop is also asked once at the end of each epoch (after its checkpoint).
        #expect(partial.position.step == (stopAfter <= 4 ? stopAfter : stopAfter - 1))
        let (contents, warnings) = try TrainingCheckpoint.newestReadable(in: splitFolder)
        #expect(warnings.isEmpty)
        #expect(contents.position == partial.position)
        let second = try Pretrainer(configuration: PretrainConfiguration(), backend: HostBackend(), data: TinyRun.data(),
                                    runFolder: splitFolder, resume: contents, workers: 2, report: { _ in })
        #expect(second.configuration == TinyRun.configuration)   // the checkpoint's configuration wins
        let summary = try second.run()
        #expect(summary.completed)
        #expect(try parameters(second) == parameters(straight))
        let (resumedState, straightState) = (try second.optimizer.stateValues(on: second.model.backend),
                                             try straight.optimizer.stateValues(on: straight.model.backend))
        #expect(resumedState.map(\.key) == ["exp_avg", "exp_avg_sq"])
        #expect(resumedState.map(\.values) == straightState.map(\.values))
        #expect(second.bank?.features == straight.bank?.features)
        #expect(second.bank?.labels == straight.bank?.labels)
        #expect(second.bank?.pointer == straight.bank?.pointer)
        #expect(try second.model.backend.download(second.model.bufferTensor)
            == straight.model.backend.download(straight.model.bufferTensor))
    }

    @Test func aNonFiniteStepStopsNamingTheLayerAndKeepsTheLastCheckpoint() throws {
        let folder = try TinyRun.folder("nan")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: { _ in })
        let layout = trainer.layout
        let poisoned = "module.base_encoder.blocks.0.mlp.fc1.weight"
        let entry = try #require(layout.table[poisoned])
        var saved: [Float] = []
        trainer.trainingStep.afterForward = { model, step in
            guard step == 6 else { return }
            saved = try model.backend.download(model.parameterTensor)
            var values = saved
            values[entry.offset + 3] = .nan
            try model.backend.upload(values, to: model.parameterTensor)
        }
        #expect {
            try trainer.run()
        } throws: { error in
            let text = "\(error)"
            return text.contains("iteration 6") && text.contains("epoch 2") && text.contains(poisoned)
                && text.contains("checkpoint_0001.safetensors") && text.contains("intact")
        }
        // The epoch-1 checkpoint is whole and finite; nothing after it was written.
        #expect(TrainingCheckpoint.candidates(in: folder).map(\.lastPathComponent) == ["checkpoint_0001.safetensors"])
        let contents = try TrainingCheckpoint.read(folder.appendingPathComponent("checkpoint_0001.safetensors"))
        #expect(contents.position == TrainingPosition(epoch: 1, batch: 0, step: 4))
        let allFinite = contents.initial.parameters.allSatisfy { $0.isFinite }
        #expect(allFinite)
        #expect(!saved.isEmpty)
    }

    @Test func aCheckpointCutOffMidWriteIsSkippedByResumeAuto() throws {
        let folder = try TinyRun.folder("truncated")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: { _ in })
        _ = try trainer.run()
        let newest = folder.appendingPathComponent("checkpoint_0002.safetensors")
        let bytes = try Data(contentsOf: newest)
        try bytes.prefix(bytes.count / 2).write(to: newest)
        #expect {
            try TrainingCheckpoint.read(newest)
        } throws: { error in
            "\(error)".contains("cannot read checkpoint \(newest.path)") && "\(error)".contains("previous checkpoint")
        }
        let (contents, warnings) = try TrainingCheckpoint.newestReadable(in: folder)
        #expect(contents.position.epoch == 1)
        #expect(warnings.count == 1 && warnings[0].contains("checkpoint_0002.safetensors"))
    }

    @Test func unreadableSamplesAreSkippedReportedAndTrainingGoesOn() throws {
        let folder = try TinyRun.folder("corrupt")
        defer { try? FileManager.default.removeItem(at: folder) }
        let events = EventLog()
        var configuration = TinyRun.configuration
        configuration.epochs = 1
        configuration.warmupEpochs = 0
        configuration.evalEvery = 0
        let trainer = try Pretrainer(configuration: configuration, backend: HostBackend(),
                                     data: TinyRun.data(failing: [3, 17]), runFolder: folder, workers: 2,
                                     report: events.append)
        let summary = try trainer.run()
        #expect(summary.completed)
        #expect(events.iterations.count == 4)
        #expect(events.rankMessages.contains { $0.hasPrefix("skipped unreadable sample") && $0.contains("/tiny/3.png") })
        #expect(events.rankMessages.contains { $0.contains("/tiny/17.png") })
        #expect(events.messages.contains { $0.contains("2 unreadable samples were skipped and replaced") })
    }

    /// Files a dataset left out are named in the log with their reason (the first 20, then a
    /// count) and all written to skipped_files.tsv in the run folder.
    @Test func skippedFilesAreNamedInTheLogAndTheRunFolder() throws {
        struct FolderLike: ImageDataset {
            let base = TinyDataset(count: 32, seed: 1)
            var count: Int { base.count }
            var classNames: [String] { base.classNames }
            func label(at index: Int) -> Int? { base.label(at: index) }
            func image(at index: Int) throws -> Image { try base.image(at: index) }
            var summary: String { "folder-like, 23 skipped" }
            var skippedFiles: [(path: String, reason: String)] {
                (0..<23).map { ("/data/train/a/\($0).jpg", "not a JPEG file: starts with 00 00") }
            }
        }
        let folder = try TinyRun.folder("skipped-files")
        defer { try? FileManager.default.removeItem(at: folder) }
        let events = EventLog()
        _ = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(),
                           data: DatasetSplits(train: FolderLike(), test: nil, name: "folder-like"),
                           runFolder: folder, workers: 1, report: events.append)
        let messages = events.messages
        #expect(messages.contains { $0.contains("23 unreadable file(s)") && $0.contains("skipped_files.tsv") })
        #expect(messages.contains { $0.contains("/data/train/a/0.jpg: not a JPEG file") })
        #expect(messages.contains { $0.contains("/data/train/a/19.jpg") })
        #expect(!messages.contains { $0.contains("/data/train/a/20.jpg") })
        #expect(messages.contains { $0.contains("3 more") })
        let listed = try String(contentsOf: folder.appendingPathComponent("skipped_files.tsv"), encoding: .utf8)
            .split(separator: "\n")
        #expect(listed.count == 23)
        #expect(listed.last == "/data/train/a/22.jpg\tnot a JPEG file: starts with 00 00")
    }

    /// LARS (SPEC A.6), SGD and LAMB train through the loop, and their state round-trips through
    /// the checkpoint under torch's keys.
    @Test(arguments: [(OptimizerKind.lars, 0.6, 1e-6), (.sgd, 0.05, 1e-4), (.lamb, 2e-3, 0.1)])
    func eachOptimizerTrainsAndCheckpointsItsState(kind: OptimizerKind, lr: Double, weightDecay: Double) throws {
        let folder = try TinyRun.folder("optimizer-\(kind.rawValue)")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.optimizer = kind
        configuration.lr = lr
        configuration.weightDecay = weightDecay
        configuration.epochs = 1
        configuration.warmupEpochs = 0.5
        configuration.evalEvery = 0
        let trainer = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: { _ in })
        let before = try parameters(trainer)
        let summary = try trainer.run()
        #expect(summary.completed && summary.lastLoss.isFinite)
        let after = try parameters(trainer)
        #expect(after != before)
        let contents = try TrainingCheckpoint.read(folder.appendingPathComponent("checkpoint_0001.safetensors"))
        #expect(contents.configuration.optimizer == kind)
        #expect(contents.initial.parameters == after)
        let state = try trainer.optimizer.stateValues(on: trainer.model.backend)
        #expect(state.map(\.key) == kind.stateKeys)
        for (key, values) in state {
            #expect(contents.optimizerState[key] == values, "\(key)")
            #expect(values.contains { $0 != 0 }, "\(key)")
        }
        // Resuming restores exactly that state.
        let resumed = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, resume: contents, workers: 2, report: { _ in })
        #expect(try resumed.optimizer.stateValues(on: resumed.model.backend).map(\.values) == state.map(\.values))
    }

    /// The paper's ablations train through the loop, and a checkpoint restores them.
    @Test(arguments: [("avg", false, "sincos"), ("cls", true, "sincos"), ("cls", false, "none")])
    func ablationOptionsTrainAndRoundTrip(pooling: String, vitBN: Bool, positionEmbedding: String) throws {
        let folder = try TinyRun.folder("options")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.pooling = pooling
        configuration.vitBN = vitBN
        configuration.positionEmbedding = positionEmbedding
        configuration.epochs = 1
        configuration.warmupEpochs = 0.5
        let trainer = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: { _ in })
        let summary = try trainer.run()
        #expect(summary.completed && summary.lastLoss.isFinite && summary.knnTop1.count == 2)
        let contents = try TrainingCheckpoint.read(folder.appendingPathComponent("checkpoint_0001.safetensors"))
        #expect(contents.configuration == configuration)
        #expect(contents.layout.config == (try configuration.modelConfig()))
        #expect(contents.initial.parameters == (try parameters(trainer)))
        #expect(contents.initial.buffers == (try trainer.model.backend.download(trainer.model.bufferTensor)))
    }

    /// An evaluation batch whose every image is unreadable is left out, not fatal (and the epoch's
    /// checkpoint is written before its evaluation).
    @Test func anEvaluationBatchOfUnreadableImagesIsSkipped() throws {
        let folder = try TinyRun.folder("eval-skip")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.epochs = 1
        configuration.warmupEpochs = 0
        // Feature batches of 8: test samples 8…11 form the last batch, all unreadable.
        let data = DatasetSplits(train: TinyDataset(count: 32, seed: 1),
                                 test: TinyDataset(count: 12, seed: 2, failing: [8, 9, 10, 11]), name: "tiny")
        let trainer = try Pretrainer(configuration: configuration, backend: HostBackend(), data: data,
                                     runFolder: folder, workers: 2, report: { _ in })
        let summary = try trainer.run()
        #expect(summary.completed && summary.knnTop1.keys.sorted() == [0, 1])
    }

    @Test func aDatasetSmallerThanOneBatchIsRejected() throws {
        var configuration = TinyRun.configuration
        configuration.batchSize = 64
        let folder = try TinyRun.folder("small")
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect {
            try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(), runFolder: folder,
                           report: { _ in })
        } throws: { "\($0)".contains("fewer than one batch of 64") }
    }
}
