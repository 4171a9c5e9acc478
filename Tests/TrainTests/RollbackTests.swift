import Foundation
import Tensors
import Testing
@testable import Train

/// `--on-nonfinite rollback`: a non-finite batch or weight update is rolled back to the last
/// in-memory snapshot and its batch skipped; the run then equals one that never saw that batch,
/// bit for bit (host backend), and a resume from a checkpoint written after the rollback too.
@Suite struct RollbackTests {
    static let poisonedBatch = (epoch: 1, batch: 1)
    static let poisonedParameter = "module.base_encoder.blocks.0.mlp.fc1.weight"

    static func trainer(_ folder: URL, policy: NonFinitePolicy = .stop, configuration: PretrainConfiguration = TinyRun.configuration,
                        savePolicy: SavePolicy = .default, resume: TrainingCheckpoint.Contents? = nil,
                        events: EventLog = EventLog()) throws -> Pretrainer {
        try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(), runFolder: folder,
                       resume: resume, workers: 2, savePolicy: savePolicy, nonFinite: policy, report: events.append)
    }

    /// NaN in one pixel of view 1 of (epoch 1, batch 1): the loss goes NaN there.
    static func poisonBatch(_ trainer: Pretrainer) {
        trainer.beforeUpload = { batch, epoch in
            guard (epoch, batch.batchIndex) == poisonedBatch else { return }
            batch.views[0][5] = .nan
        }
    }

    /// Sets one weight to NaN after the update of `step` (every step from it on when `persistent`).
    static func poisonUpdate(_ trainer: Pretrainer, at step: Int, persistent: Bool = false) throws {
        let entry = try #require(trainer.layout.table[poisonedParameter])
        var done = false
        trainer.trainingStep.afterUpdate = { model, current in
            guard persistent ? current >= step : (current == step && !done) else { return }
            done = true
            var values = try model.backend.download(model.parameterTensor)
            values[entry.offset + 3] = .nan
            try model.backend.upload(values, to: model.parameterTensor)
        }
    }

    /// Everything a run's state is made of, compared bit for bit.
    static func expectSameState(_ a: Pretrainer, _ b: Pretrainer, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let backend = a.model.backend
        #expect(try backend.download(a.model.parameterTensor) == b.model.backend.download(b.model.parameterTensor),
                "parameters", sourceLocation: sourceLocation)
        #expect(try backend.download(a.model.bufferTensor) == b.model.backend.download(b.model.bufferTensor),
                sourceLocation: sourceLocation)
        #expect(try a.optimizer.stateValues(on: backend).map(\.values) == b.optimizer.stateValues(on: b.model.backend).map(\.values),
                "optimizer state", sourceLocation: sourceLocation)
        #expect(a.bank?.features == b.bank?.features && a.bank?.pointer == b.bank?.pointer, "bank", sourceLocation: sourceLocation)
        #expect(a.gradients.recentNorms == b.gradients.recentNorms, "gradient history", sourceLocation: sourceLocation)
        #expect(a.position == b.position, sourceLocation: sourceLocation)
    }

    static func lines(_ folder: URL) throws -> [[String: Any]] {
        try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }

    /// The run that never saw (epoch 1, batch 1): its skip given up front.
    static func reference(_ folder: URL, scale: Double = 1) throws -> Pretrainer {
        let trainer = try trainer(folder)
        trainer.skipped = [SkippedBatch(epoch: 1, batch: 1, step: 6, learningRateScale: scale)]
        #expect(try trainer.run().completed)
        return trainer
    }

    @Test(arguments: [3, 1]) func aNonFiniteBatchIsSkippedAndTheRunEqualsOneWithoutIt(snapshotEvery: Int) throws {
        let folder = try TinyRun.folder("rollback-batch"), referenceFolder = try TinyRun.folder("rollback-reference")
        defer { for url in [folder, referenceFolder] { try? FileManager.default.removeItem(at: url) } }
        let events = EventLog()
        let trainer = try Self.trainer(folder, policy: NonFinitePolicy(action: .rollback, snapshotEvery: snapshotEvery), events: events)
        Self.poisonBatch(trainer)
        let summary = try trainer.run()
        #expect(summary.completed)
        #expect(trainer.skipped == [SkippedBatch(epoch: 1, batch: 1, step: 6, learningRateScale: 1)])
        try Self.expectSameState(trainer, try Self.reference(referenceFolder))
        // metrics.jsonl: one rollback line, iterations 1…7 once each, as the reference's.
        let lines = try Self.lines(folder)
        let rollbacks = lines.filter { $0["type"] as? String == "rollback" }
        // The snapshot: the epoch's start (after step 4), or every iteration's (after step 5).
        let restored = snapshotEvery == 3 ? 4 : 5
        #expect(rollbacks.count == 1 && rollbacks[0]["step"] as? Int == 6 && rollbacks[0]["restored_step"] as? Int == restored)
        #expect((rollbacks.first?["reason"] as? String)?.contains("iteration 6 (epoch 2, batch 2) went non-finite") == true)
        let steps = lines.filter { $0["type"] as? String == "iteration" }.compactMap { $0["step"] as? Int }
        #expect(steps == Array(1...7))
        let referenceLosses = try Self.lines(referenceFolder).filter { $0["type"] as? String == "iteration" }.map { $0["loss"] as? Double }
        #expect(lines.filter { $0["type"] as? String == "iteration" }.map { $0["loss"] as? Double } == referenceLosses)
        #expect(events.iterations.map(\.step) == Array(1...7))
        #expect(events.messages.contains { $0.contains("Rolled back to iteration \(restored), skipping epoch 2 batch 2") })
        #expect(summary.alarms.description.contains("1 rollback from a non-finite iteration, first at iteration 6"))
    }

    /// An update that leaves a weight NaN: the next iteration (or snapshot) finds it, and the batch
    /// of that update is the one skipped.
    @Test(arguments: [3, 1]) func aNonFiniteUpdateIsRolledBackAndItsBatchSkipped(snapshotEvery: Int) throws {
        let folder = try TinyRun.folder("rollback-update"), referenceFolder = try TinyRun.folder("rollback-update-reference")
        defer { for url in [folder, referenceFolder] { try? FileManager.default.removeItem(at: url) } }
        let trainer = try Self.trainer(folder, policy: NonFinitePolicy(action: .rollback, snapshotEvery: snapshotEvery))
        try Self.poisonUpdate(trainer, at: 6)
        #expect(try trainer.run().completed)
        #expect(trainer.skipped.map { [$0.epoch, $0.batch] } == [[1, 1]])
        try Self.expectSameState(trainer, try Self.reference(referenceFolder))
        let steps = try Self.lines(folder).filter { $0["type"] as? String == "iteration" }.compactMap { $0["step"] as? Int }
        #expect(steps == Array(1...7))
    }

    @Test func rollbacksBeyondTheLimitStopWithTheNonFiniteError() throws {
        let folder = try TinyRun.folder("rollback-limit")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try Self.trainer(folder, policy: NonFinitePolicy(action: .rollback, limit: 2, window: 100, snapshotEvery: 2))
        try Self.poisonUpdate(trainer, at: 6, persistent: true)
        #expect {
            try trainer.run()
        } throws: { error in
            let text = "\(error)"
            return text.contains(Self.poisonedParameter) && text.contains("Gave up after 2 rollbacks within 100 iterations")
                && text.contains("--rollback-limit 2") && text.contains("checkpoint_0001.safetensors")
        }
        #expect(trainer.skipped.count == 2)
        #expect(try Self.lines(folder).filter { $0["type"] as? String == "rollback" }.count == 2)
    }

    /// The lr scale applies from the skipped batch on; the skipped batches travel in checkpoints,
    /// so a run stopped after its rollback and resumed ends as the uninterrupted one.
    @Test func theLearningRateScaleAndTheSkippedBatchesSurviveAResume() throws {
        let straightFolder = try TinyRun.folder("rollback-straight"), splitFolder = try TinyRun.folder("rollback-split")
        let referenceFolder = try TinyRun.folder("rollback-scaled-reference")
        defer { for url in [straightFolder, splitFolder, referenceFolder] { try? FileManager.default.removeItem(at: url) } }
        let policy = NonFinitePolicy(action: .rollback, learningRateScale: 0.5, snapshotEvery: 3)
        let straight = try Self.trainer(straightFolder, policy: policy)
        Self.poisonBatch(straight)
        #expect(try straight.run().completed)
        try Self.expectSameState(straight, try Self.reference(referenceFolder, scale: 0.5))
        let iterations = try Self.lines(straightFolder).filter { $0["type"] as? String == "iteration" }
        let before = try #require(iterations.first { $0["step"] as? Int == 5 }?["lr"] as? Double)
        let after = try #require(iterations.first { $0["step"] as? Int == 6 }?["lr"] as? Double)
        let schedule = Schedules(baseLearningRate: TinyRun.configuration.lr, batchSize: 8, warmupEpochs: 1, epochs: 2,
                                 baseMomentum: 0.99, cosineMomentum: true)
        #expect(before == schedule.learningRate(at: 1.0) && after == 0.5 * schedule.learningRate(at: 1.5))

        // Stopped right after the rollback's first applied iteration, then resumed without the poison.
        let first = try Self.trainer(splitFolder, policy: policy, savePolicy: try SavePolicy(parsing: "1", keep: 1))
        Self.poisonBatch(first)
        var stop = false
        first.trainingStep.afterUpdate = { _, step in stop = step == 6 }
        #expect(try !first.run(shouldStop: { stop }).completed)
        let (contents, _) = try TrainingCheckpoint.newestReadable(in: splitFolder)
        #expect(contents.position == TrainingPosition(epoch: 1, batch: 3, step: 6))
        #expect(contents.skippedBatches == [SkippedBatch(epoch: 1, batch: 1, step: 6, learningRateScale: 0.5)])
        let second = try Self.trainer(splitFolder, policy: policy, resume: contents)
        #expect(try second.run().completed)
        try Self.expectSameState(second, straight)
        let steps = try Self.lines(splitFolder).filter { $0["type"] as? String == "iteration" }.compactMap { $0["step"] as? Int }
        #expect(steps == Array(1...7))
    }

    @Test func thePolicyFlagsAreChecked() {
        for (action, scale, limit, window, every, flag) in [("skip", 1.0, 3, 10, 5, "--on-nonfinite"), ("rollback", 0, 3, 10, 5, "--rollback-lr-scale"),
                                                            ("rollback", 2, 3, 10, 5, "--rollback-lr-scale"), ("rollback", 1, 0, 10, 5, "--rollback-limit"),
                                                            ("rollback", 1, 3, 0, 5, "--rollback-window"), ("rollback", 1, 3, 10, 0, "--snapshot-every")] {
            #expect { _ = try NonFinitePolicy(parsing: action, learningRateScale: scale, limit: limit, window: window, snapshotEvery: every) }
                throws: { "\($0)".contains(flag) }
        }
        #expect(SkippedBatch.learningRateFactor(at: 3, 0, skipped: [.init(epoch: 1, batch: 2, step: 9, learningRateScale: 0.5),
                                                                   .init(epoch: 2, batch: 0, step: 11, learningRateScale: 0.5),
                                                                   .init(epoch: 3, batch: 0, step: 15, learningRateScale: 0.5)]) == 0.25)
    }
}
