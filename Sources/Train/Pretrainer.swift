import Augment
import Collective
import Datasets
import FileSystem
import Foundation
import Tensors
import Model

/// What one training iteration measured (one JSON line in `metrics.jsonl`).
public struct IterationMetrics: Sendable {
    public var epoch: Int
    public var batch: Int
    public var batchesPerEpoch: Int
    public var step: Int
    public var loss: Double
    public var learningRate: Double
    public var momentum: Double
    public var imagesPerSecond: Double
    /// Seconds this iteration waited for the data loader (0 when the prefetch kept up).
    public var dataSeconds: Double
    /// The dense kNN monitor's accuracy of this batch against the memory bank (nil when not run).
    public var knnMonitor: Double?
    /// Gradient norm per monitored layer (``GradientMonitor/layers`` order).
    public var gradientNorms: [(String, Double)]
    public var spikes: [GradientMonitor.Spike]
    /// Set on the iteration where the smoothed kNN monitor starts a dip (``KNNDipDetector``).
    public var knnDip: KNNDipDetector.Dip? = nil
}

/// Events the trainer reports to whoever shows them (the CLI's progress line and log).
public enum TrainingEvent: Sendable {
    /// About the run as a whole: data parallel, rank 0's is shown.
    case message(String)
    /// About this rank's own work (its slice of the batches): every rank's is shown.
    case rankMessage(String)
    case iteration(IterationMetrics)
    /// kNN top-1 of the held-out split; epoch 0 is the initialisation baseline.
    case evaluation(epoch: Int, knnTop1: Double, seconds: Double)
    case checkpoint(path: String)
}

/// How a run ended.
public struct TrainingSummary: Sendable {
    public var completed: Bool
    public var position: TrainingPosition
    public var lastLoss: Double
    public var knnTop1: [Int: Double]
    public var seconds: Double
    public var imagesPerSecond: Double
    public var lastCheckpoint: String?
    /// The gradient spikes and kNN dips of the whole run (all its resumed parts), from metrics.jsonl.
    public var alarms = AlarmSummary()
    /// Data parallel: what this rank's collectives cost during the run.
    public var collectives = CollectiveStatistics()
    /// Data parallel: seconds this rank waited after its backwards for the gradient all-reduce
    /// (what the overlap with the backward did not hide), and the buckets it reduced.
    public var exposedReduction = (seconds: 0.0, buckets: 0)
}

/// `mocov3-cl pretrain`: the MoCo v3 training loop (SPEC A.1) over a dataset, with the per-
/// iteration lr and momentum schedules, the paper's monitors (dense kNN, per-layer gradient
/// norms with spike warnings), the kNN evaluation per epoch, atomic checkpoints every epoch and
/// on request, and a stop with a named layer when anything goes non-finite.
public final class Pretrainer {
    public let configuration: PretrainConfiguration
    public let layout: MoCoParameters
    public let model: MoCoModel
    public let optimizer: any Optimizer
    /// The iteration `mocov3-cl step` runs too (tests set its `afterForward` hook).
    let trainingStep: MoCoTrainingStep
    public let runFolder: URL
    let data: DatasetSplits
    let schedules: Schedules
    let gradients: GradientMonitor
    var bank: MemoryBank?
    /// The bank on the model's backend, kept in step with `bank` row by row.
    var deviceBank: DeviceMemoryBank?
    var position: TrainingPosition
    let workers: Int
    let report: (TrainingEvent) -> Void
    let metrics: MetricsLog
    /// Held from init to the end of `run()`: a second run on the same folder is refused, naming this PID.
    var lock: RunLock?
    let savePolicy: SavePolicy
    /// The kNN-dip alarm; on resume its window and maximum are rebuilt from the kept metrics lines.
    var dips: KNNDipDetector
    /// Set when resuming from an epoch-end checkpoint: that epoch's evaluation came after the save,
    /// so its metrics line was cut away with the rest and runs again first.
    var redoEvaluation = false
    /// `--on-nonfinite`: stop (the default) or roll back (``NonFinitePolicy``).
    let nonFinite: NonFinitePolicy
    /// The batches rollbacks skipped, in all the run's parts (a resume reads them from the checkpoint).
    var skipped: [SkippedBatch]
    /// The newest in-memory snapshot of the training state (rollback only); always finite.
    var snapshot: TrainingSnapshot?
    /// metrics.jsonl's length before each batch's line in this epoch (the snapshot's batch on): a
    /// rollback cuts the offending batch's line away.
    var lineOffsets: [Int: Int] = [:]
    /// After a rollback, the batches before this index run again silently: their lines are kept,
    /// and nothing is saved until the replay has passed them.
    var replayEnd: Int?
    /// The last batch whose update was applied: the one to blame when the parameters are non-finite.
    var lastApplied: (epoch: Int, batch: Int)?
    /// The data-parallel group: this rank trains on its slice of every global batch; rank 0 alone
    /// writes the run folder (metrics, checkpoints, report) and holds its lock.
    public let communicator: any Communicator
    var isWriter: Bool { communicator.rank == 0 }
    let x1: Tensor, x2: Tensor

    /// Validates `configuration` (one ``PretrainPlan``), then as ``init(plan:backend:data:runFolder:resume:workers:report:)``.
    ///
    /// - Parameters:
    ///   - resume: a checkpoint to continue from; its configuration replaces `configuration`.
    public convenience init(configuration: PretrainConfiguration, backend: any Backend, data: DatasetSplits,
                            runFolder: URL, resume: TrainingCheckpoint.Contents? = nil,
                            workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                            savePolicy: SavePolicy = .default, dipDrop: Double = KNNDipDetector.defaultDrop,
                            nonFinite: NonFinitePolicy = .stop, communicator: any Communicator = SingleProcess(),
                            bucketBytes: Int = MoCoTrainingStep.defaultBucketBytes,
                            report: @escaping (TrainingEvent) -> Void) throws {
        try self.init(plan: resume?.plan ?? PretrainPlan(configuration), backend: backend, data: data,
                      runFolder: runFolder, resume: resume, workers: workers, savePolicy: savePolicy, dipDrop: dipDrop,
                      nonFinite: nonFinite, communicator: communicator, bucketBytes: bucketBytes, report: report)
    }

    /// - Parameters:
    ///   - plan: the validated run (with `resume`, the checkpoint's plan, its data path possibly moved).
    ///   - resume: a checkpoint to continue from: its weights, optimizer state, bank and position.
    ///   - savePolicy: when mid-epoch checkpoints are written (``SavePolicy``).
    ///   - nonFinite: stop or roll back when an iteration goes non-finite (``NonFinitePolicy``).
    ///   - communicator: the data-parallel group (every rank constructs its trainer with the same
    ///     plan; `-b` is the global batch, each rank takes its B/N slice).
    public init(plan: PretrainPlan, backend: any Backend, data: DatasetSplits, runFolder: URL,
                resume: TrainingCheckpoint.Contents? = nil, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                savePolicy: SavePolicy = .default, dipDrop: Double = KNNDipDetector.defaultDrop,
                nonFinite: NonFinitePolicy = .stop, communicator: any Communicator = SingleProcess(),
                bucketBytes: Int = MoCoTrainingStep.defaultBucketBytes,
                report: @escaping (TrainingEvent) -> Void) throws {
        let configuration = plan.configuration
        self.configuration = configuration
        self.communicator = communicator
        let config = plan.layout.config
        layout = plan.layout
        guard data.train.count >= configuration.batchSize else {
            throw PretrainError("\(data.name) has \(data.train.count) training images, fewer than one batch of "
                + "\(configuration.batchSize); lower -b/--batch-size")
        }
        let ranks = communicator.size
        guard configuration.batchSize >= ranks else {
            throw PretrainError("-b/--batch-size \(configuration.batchSize) is smaller than the \(ranks) processes: each rank "
                + "needs at least one image of every global batch; start fewer processes (mpirun -np) or raise -b")
        }
        guard configuration.batchSize % ranks == 0 else {
            throw PretrainError("-b/--batch-size \(configuration.batchSize) does not split over \(ranks) processes: the global "
                + "batch must be a multiple of mpirun -np (e.g. -b \(configuration.batchSize / ranks * ranks) or "
                + "\((configuration.batchSize / ranks + 1) * ranks))")
        }
        guard configuration.batchSize / ranks >= 2 || ranks == 1 else {
            throw PretrainError("-b/--batch-size \(configuration.batchSize) over \(ranks) processes leaves each rank one image "
                + "of every batch; each rank needs at least 2: raise -b or start fewer processes")
        }
        try Self.checkSameRun(plan: plan, data: data, resume: resume, communicator: communicator,
                              options: "save \(savePolicy), non-finite \(nonFinite), buckets \(bucketBytes) B")
        model = try MoCoModel(parameters: layout, backend: backend, batchSize: configuration.batchSize / ranks,
                              initial: resume?.initial ?? layout.initialValues(seed: configuration.seed),
                              communicator: communicator)
        optimizer = try configuration.optimizer.make(backend: backend, segments: model.trainableSegments,
                                                     weightDecay: configuration.weightDecay)
        if let resume { try optimizer.restore(resume.optimizerState, on: backend) }
        trainingStep = try MoCoTrainingStep(model: model, optimizer: optimizer, bucketBytes: bucketBytes)
        self.runFolder = runFolder
        self.data = data
        schedules = Schedules(baseLearningRate: configuration.lr, batchSize: configuration.batchSize,
                              warmupEpochs: configuration.warmupEpochs, epochs: Double(configuration.epochs),
                              baseMomentum: configuration.mocoM, cosineMomentum: configuration.mocoMCos)
        gradients = GradientMonitor(layout: layout, spikeFactor: configuration.spikeFactor)
        if let saved = resume?.gradientHistory, !saved.isEmpty {
            gradients.recentNorms = gradients.layers.map { saved[$0.name] ?? [] }
        }
        self.savePolicy = savePolicy
        self.nonFinite = nonFinite
        skipped = resume?.skippedBatches ?? []
        dips = KNNDipDetector(drop: dipDrop)
        if data.train.isLabeled, configuration.knnEvery > 0 {
            let length = configuration.knnBank > 0 ? configuration.knnBank : max(configuration.batchSize, data.train.count / 10)
            if let saved = resume?.bank, saved.length == length { bank = saved } else {
                bank = MemoryBank(length: length, width: config.vit.embedDim)
            }
            deviceBank = try bank.map { try DeviceMemoryBank($0, backend: backend) }
        }
        position = resume?.position ?? TrainingPosition()
        self.workers = max(1, workers)
        self.report = report
        let metricsURL = runFolder.appendingPathComponent("metrics.jsonl")
        if communicator.rank == 0 {
            try FileSystem.createDirectory(runFolder)
            lock = try RunLock(folder: runFolder)
            Self.removeStaleTemporaryFiles(in: runFolder)
            try Self.reportSkippedFiles(data, in: runFolder) { report(.message($0)) }
            metrics = try MetricsLog(url: metricsURL)
        } else {
            metrics = MetricsLog(discardingFor: metricsURL)
        }
        let shape = [configuration.batchSize / ranks, 3, configuration.imageSize, configuration.imageSize]
        x1 = try backend.makeTensor(shape: shape)
        x2 = try backend.makeTensor(shape: shape)
        if resume == nil, metrics.length > 0 {
            // A new run (the CLI refuses a folder with checkpoints unless resuming): what an earlier
            // attempt logged before it died without a checkpoint describes nothing that is kept.
            report(.message("\(metrics.url.path) held lines of an earlier attempt that left no checkpoint; starting it afresh"))
            try metrics.truncate(to: 0)
        }
        if let resume, let saved = resume.metricsBytes, communicator.rank == 0 {
            // Lines written after the checkpoint (a kill -9 may leave a torn one) are the resumed
            // run's to write again: cut back to the checkpoint, so no line is duplicated.
            let length = metrics.length
            if length > saved {
                try metrics.truncate(to: saved)
            } else if length < saved {
                report(.message("warning: \(metrics.url.path) is shorter (\(length) bytes) than when \(resume.source) "
                    + "was saved (\(saved) bytes); the metrics before the resume are incomplete"))
            }
        }
        if resume != nil {
            redoEvaluation = resume?.metricsBytes != nil && position.batch == 0 && position.epoch > 0
                && isEvaluationDue(after: position.epoch)
        }
        if resume != nil, communicator.rank == 0 {
            // The dip detector's state is a function of the monitor values logged so far: replay them.
            var replayed = dips
            try MetricsLines.forEach(in: metrics.url) { _, object in
                guard let object, object["type"] as? String == "iteration", let value = object["knn_monitor"] as? Double else { return }
                _ = replayed.record(value, iteration: object["step"] as? Int ?? 0)
            }
            self.dips = replayed
        }
    }

    var batchesPerEpoch: Int { data.train.count / configuration.batchSize }

    /// Removes the temporary files of atomic writes that a killed run left (`.<name>.<pid>-<hex>.tmp`):
    /// with the folder's lock held, no other process is writing them.
    static func removeStaleTemporaryFiles(in folder: URL) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for name in names where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            unlink(folder.appendingPathComponent(name).path)
        }
    }

    /// How many skipped files ``reportSkippedFiles(_:in:report:)`` names in the log.
    static let skippedFilesShown = 20

    /// Names every file the datasets left out (unreadable or corrupt): the first
    /// ``skippedFilesShown`` in the log with the decoder's reason, a count beyond, and all of
    /// them in `skipped_files.tsv` in the run folder (path, tab, reason; one per line).
    static func reportSkippedFiles(_ data: DatasetSplits, in runFolder: URL, message: (String) -> Void) throws {
        let skipped = data.train.skippedFiles + (data.test?.skippedFiles ?? [])
        guard !skipped.isEmpty else { return }
        let url = runFolder.appendingPathComponent("skipped_files.tsv")
        let lines = skipped.map { "\($0.path)\t\($0.reason.replacingOccurrences(of: "\n", with: " "))\n" }
        try FileSystem.writeAtomically(Data(lines.joined().utf8), to: url)
        message("\(skipped.count) unreadable file(s) were left out of \(data.name); all are listed in \(url.path):")
        for file in skipped.prefix(skippedFilesShown) { message("  skipped \(file.path): \(file.reason)") }
        if skipped.count > skippedFilesShown { message("  … and \(skipped.count - skippedFilesShown) more") }
    }

    /// Trains from the current position to the end of the schedule, or until `shouldStop`
    /// returns true between iterations (then it writes a checkpoint of the position reached).
    public func run(shouldStop: @escaping () -> Bool = { false }) throws -> TrainingSummary {
        defer { lock = nil }
        let start = Date()
        var summary = TrainingSummary(completed: false, position: position, lastLoss: .nan, knnTop1: [:], seconds: 0,
                                      imagesPerSecond: 0, lastCheckpoint: nil)
        if position == TrainingPosition(), configuration.evalEvery > 0, let top1 = try evaluate(epoch: 0) {
            summary.knnTop1[0] = top1
        }
        if redoEvaluation, let top1 = try evaluate(epoch: position.epoch) {
            summary.knnTop1[position.epoch] = top1
            redoEvaluation = false
        }
        var sinceSave = (iterations: 0, start: Date())
        let augmentation = MoCoAugmentation(imageSize: configuration.imageSize, cropMin: configuration.cropMin,
                                            blurScale: configuration.blurScale ?? 1)
        var imagesTrained = 0
        var trainingSeconds = 0.0
        training: while position.epoch < configuration.epochs {
            let epoch = position.epoch
            let local = model.batchSize
            let loader = TrainingBatches(dataset: data.train, augmentation: augmentation,
                                         batchSize: configuration.batchSize, seed: configuration.seed, epoch: epoch,
                                         startBatch: position.batch, rows: (communicator.rank * local)..<((communicator.rank + 1) * local),
                                         workers: workers)
            defer { loader.cancel() }
            var reportedSkips = 0
            var last = Date()
            do {
                while let batch = try loader.next() {
                    if skipped.contains(where: { $0.epoch == epoch && $0.batch == batch.batchIndex }) {
                        position.batch = batch.batchIndex + 1
                        last = Date()
                        continue
                    }
                    try takeSnapshotIfDue()
                    let replaying = replayEnd.map { batch.batchIndex < $0 } ?? false
                    if !replaying { replayEnd = nil }
                    if nonFinite.action == .rollback { lineOffsets[batch.batchIndex] = metrics.length }
                    let metrics = try iterate(batch, epoch: epoch, start: last, dataSeconds: Date().timeIntervalSince(last),
                                              silent: replaying)
                    let now = Date()
                    defer { last = now }
                    // A replay redoes iterations already counted, logged and saved.
                    if replaying { continue }
                    trainingSeconds += now.timeIntervalSince(last)
                    imagesTrained += configuration.batchSize
                    summary.lastLoss = metrics.loss
                    let skippedSamples = loader.errorDescriptions
                    for description in skippedSamples.dropFirst(reportedSkips) {
                        report(.rankMessage("\(communicator.messagePrefix)skipped unreadable sample: \(description)"))
                    }
                    reportedSkips = skippedSamples.count
                    sinceSave.iterations += 1
                    // Every rank must stop and save at the same iteration (Ctrl-C reaches them at
                    // different moments, and their clocks differ): rank 0's decision is everyone's.
                    let (stop, saveDue) = try agree(shouldStop(),
                                                    savePolicy.isDue(iterations: sinceSave.iterations,
                                                                     seconds: now.timeIntervalSince(sinceSave.start)))
                    if stop, position.batch < batchesPerEpoch {
                        summary.lastCheckpoint = try saveCheckpoint()
                        break training
                    }
                    if position.batch < batchesPerEpoch, saveDue {
                        summary.lastCheckpoint = try saveCheckpoint()
                        sinceSave = (0, Date())
                    }
                }
                position = TrainingPosition(epoch: epoch + 1, batch: 0, step: position.step)
                // The epoch is saved before its evaluation, so a failing or interrupted evaluation loses nothing.
                summary.lastCheckpoint = try saveCheckpoint()
            } catch let divergence as Divergence {
                try rollBack(divergence)
                continue training
            }
            // Each rank loads its own rows: the count is the ranks' sum.
            var skippedSamples = [Double(loader.skippedSamples)]
            if communicator.isDistributed { try communicator.allReduceSum(&skippedSamples) }
            if skippedSamples[0] > 0 {
                report(.message("epoch \(epoch + 1): \(Int(skippedSamples[0])) unreadable samples were skipped and replaced"
                    + (communicator.isDistributed ? " (all ranks)" : "")))
            }
            sinceSave = (0, Date())
            try checkRanksAgree(after: position.epoch)
            if isEvaluationDue(after: position.epoch), let top1 = try evaluate(epoch: position.epoch) {
                summary.knnTop1[position.epoch] = top1
            }
            if isWriter { writeReport(seconds: Date().timeIntervalSince(start)) }
            if try agree(shouldStop(), false).0, position.epoch < configuration.epochs { break training }
        }
        if isWriter { summary.alarms = AlarmSummary(folder: runFolder) }
        summary.collectives = communicator.statistics
        summary.exposedReduction = trainingStep.reductionExposure
        summary.completed = position.epoch >= configuration.epochs
        summary.position = position
        summary.seconds = Date().timeIntervalSince(start)
        summary.imagesPerSecond = Double(imagesTrained) / max(trainingSeconds, 1e-9)
        return summary
    }

    /// Test hook: may change a batch (of the epoch given) before it is uploaded (a test poisons one with a NaN).
    var beforeUpload: ((inout TrainingBatch, Int) -> Void)?

    /// One step of SPEC A.1 on `batch`, then the monitors. Throws a ``Divergence`` before the
    /// optimizer update when the loss or any gradient is not finite, so the weights and
    /// checkpoints stay good. `silent` (a replay after a rollback) writes and reports nothing.
    func iterate(_ batch: TrainingBatch, epoch: Int, start: Date, dataSeconds: Double, silent: Bool = false) throws -> IterationMetrics {
        let backend = model.backend
        var batch = batch
        beforeUpload?(&batch, epoch)
        let e = Double(epoch) + Double(batch.batchIndex) / Double(batchesPerEpoch)
        let learningRate = schedules.learningRate(at: e)
            * SkippedBatch.learningRateFactor(at: epoch, batch.batchIndex, skipped: skipped)
        let momentum = schedules.momentum(at: e)
        try backend.upload(batch.x1, to: x1)
        try backend.upload(batch.x2, to: x2)
        let outcome = try trainingStep(x1: x1, x2: x2, learningRate: learningRate, momentum: momentum,
                                       step: position.step + 1)
        let (loss, squared) = (outcome.loss, outcome.squaredNorms)
        guard outcome.applied else {
            let parameter = try firstNonFiniteParameter()
            // Parameters already non-finite: the last update (its batch and step) broke them, not this batch.
            var blamed = (batch: batch.batchIndex, step: position.step + 1)
            if parameter != nil, let last = lastApplied, last.epoch == epoch { blamed = (last.batch, position.step) }
            throw Divergence(epoch: epoch, batch: blamed.batch, step: blamed.step,
                             summary: "iteration \(position.step + 1) (epoch \(epoch + 1), batch \(batch.batchIndex + 1)) "
                                + "went non-finite" + (parameter.map { ": the parameter \($0) is not finite" } ?? ""),
                             error: nonFiniteError(loss: loss, squared: squared, parameter: parameter, epoch: epoch,
                                                   batch: batch.batchIndex))
        }
        lastApplied = (epoch, batch.batchIndex)
        position.step += 1
        position.batch = batch.batchIndex + 1

        let norms = gradients.layerNorms(squared)
        let spikes = gradients.record(norms)
        var knn: Double?
        // `bank` is read through `bank!` and never bound to a second variable, so enqueueing
        // mutates its arrays in place instead of copying them (copy-on-write).
        if let deviceBank, bank != nil {
            if position.step % configuration.knnEvery == 0, bank!.filled > 0 {
                let width = layout.config.vit.embedDim
                let queries = KNNClassifier.normalized(try model.baseFeatures(view: 0), width: width)
                let classifier = KNNClassifier(k: configuration.knnK, temperature: configuration.knnT,
                                               classes: data.train.classNames.count)
                let predicted = try classifier.predict(
                    queries: backend.makeTensor(queries, shape: [queries.count / width, width]),
                    bank: deviceBank.features, bankLabels: deviceBank.labels, on: backend)
                // The accuracy over the global batch: each rank votes for its own queries.
                var counts = [Double(zip(predicted, batch.labels).filter { $0 == $1 }.count), Double(batch.labels.count)]
                try communicator.allReduceSum(&counts)
                knn = counts[0] / max(counts[1], 1)
            }
            // Every rank enqueues the keys of the whole global batch, so the banks stay equal.
            let keys = try communicator.allGather(try model.momentumFeatures())
            let keyLabels = try communicator.allGather(batch.labels)
            let start = bank!.pointer
            let written = bank!.enqueue(keys, labels: keyLabels)
            try deviceBank.update(from: bank!, writtenFrom: start, count: written)
        }
        let seconds = Date().timeIntervalSince(start)
        let metrics = IterationMetrics(
            epoch: epoch, batch: batch.batchIndex, batchesPerEpoch: batchesPerEpoch, step: position.step,
            loss: Double(loss), learningRate: learningRate, momentum: momentum,
            imagesPerSecond: Double(configuration.batchSize) / max(seconds, 1e-9), dataSeconds: dataSeconds, knnMonitor: knn,
            gradientNorms: zip(gradients.layers.map(\.name), norms).map { ($0, $1) }, spikes: spikes,
            knnDip: knn.flatMap { dips.record($0, iteration: position.step) })
        if !silent {
            try self.metrics.write(metrics)
            if isWriter { report(.iteration(metrics)) }
        }
        return metrics
    }

    /// Names the iteration and the first layer that went non-finite: a parameter first (the
    /// weights were already bad), else the first gradient in forward order.
    func nonFiniteError(loss: Float, squared: [Float], parameter: String?, epoch: Int, batch: Int) -> PretrainError {
        var what = "the loss is \(loss)"
        if let parameter {
            what += "; the first non-finite parameter is \(parameter)"
        } else if let tensor = gradients.firstNonFinite(squared) {
            what += "; the first non-finite gradient (forward order) is in \(tensor)"
        }
        let checkpoint = lastGoodCheckpoint()
        return PretrainError("training diverged at iteration \(position.step + 1) (epoch \(epoch + 1), batch \(batch + 1)): "
            + "\(what). The update was not applied and \(checkpoint). Try a lower --lr, more --warmup-epochs, "
            + "or --stop-grad-conv1 (paper Sec. 4.1)")
    }

    /// "the last good checkpoint, PATH, is intact", or that there is none yet.
    func lastGoodCheckpoint() -> String {
        guard let newest = try? TrainingCheckpoint.newestReadable(in: runFolder) else { return "no checkpoint was written yet" }
        return "the last good checkpoint, \(newest.contents.source), is intact"
    }

    func firstNonFiniteParameter() throws -> String? {
        firstNonFinite(in: try model.backend.download(model.parameterTensor))
    }

    /// The first tensor of the layout with a non-finite element in `values` (the flat parameters).
    func firstNonFinite(in values: [Float]) -> String? {
        layout.table.entries.first { values[$0.offset..<($0.offset + $0.count)].contains { !$0.isFinite } }?.name
    }

    /// Rewrites `report.html` from the run folder's metrics (a failure is a warning: the run goes on).
    func writeReport(seconds: Double) {
        do {
            try RunReport.update(folder: runFolder, command: "pretrain", device: model.backend.name, seconds: seconds)
        } catch {
            report(.message("warning: report.html not written: \(error)"))
        }
    }

    /// Whether the kNN evaluation runs after `epoch` epochs (every `evalEvery`, and after the last).
    func isEvaluationDue(after epoch: Int) -> Bool {
        configuration.evalEvery > 0 && (epoch % configuration.evalEvery == 0 || epoch == configuration.epochs)
    }

    /// Deletes all but the newest ``SavePolicy/keep`` mid-epoch checkpoints, and every mid-epoch
    /// checkpoint older than the newest epoch-end one; epoch-end checkpoints all stay.
    func pruneMidEpochCheckpoints() throws {
        let all = TrainingCheckpoint.candidates(in: runFolder)   // newest position first
        let newestEpochEnd = all.firstIndex { !TrainingCheckpoint.isMidEpoch($0) } ?? all.endIndex
        let newer = all[..<newestEpochEnd].filter(TrainingCheckpoint.isMidEpoch)
        let older = all[newestEpochEnd...].filter(TrainingCheckpoint.isMidEpoch)
        for url in Array(newer.dropFirst(savePolicy.keep)) + older where unlink(url.path) != 0 && errno != ENOENT {
            throw FileSystemError("delete the old checkpoint", path: url.path, code: errno)
        }
    }

    /// Writes a checkpoint of the current position, then prunes the older mid-epoch ones; returns its path.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        // An update can overflow without a non-finite gradient (an absurd lr): never save such weights.
        if let parameter = try firstNonFiniteParameter() {
            throw parameterDivergence(parameter, PretrainError("after iteration \(position.step) the parameter \(parameter) is not finite; "
                + "no checkpoint was written and \(lastGoodCheckpoint()). Try a lower --lr"))
        }
        let url = runFolder.appendingPathComponent(TrainingCheckpoint.fileName(for: position))
        guard isWriter else { return url.path }
        do {
            try TrainingCheckpoint.write(to: url, model: model, optimizer: optimizer, configuration: configuration,
                                         position: position, bank: bank, monitor: gradients,
                                         metricsBytes: metrics.length, skipped: skipped)
        } catch let error as FileSystemError {
            throw error.adding(consequence: "No checkpoint was written for epoch \(position.epoch), batch "
                + "\(position.batch), and \(lastGoodCheckpoint()): resume from it with --resume auto")
        }
        report(.checkpoint(path: url.path))
        try pruneMidEpochCheckpoints()
        return url.path
    }

    // MARK: Data parallel

    /// Every rank must train the same run: the plan's configuration and the resumed position
    /// (flags that differ across ranks would silently train different models).
    /// - Parameter options: the options that change what the ranks do together without being part
    ///   of the run's configuration (saving, the non-finite policy, the all-reduce buckets).
    static func checkSameRun(plan: PretrainPlan, data: DatasetSplits, resume: TrainingCheckpoint.Contents?,
                             communicator: any Communicator, options: String) throws {
        guard communicator.isDistributed else { return }
        let position = resume?.position ?? TrainingPosition()
        // The datasets too: a rank that read fewer files (or no held-out split) would run another
        // number of iterations or evaluations, and the ranks' collectives would no longer pair up.
        let dataFacts = "train \(data.train.count) images, \(data.train.classNames.count) classes; held-out "
            + (data.test.map { "\($0.count) images, \($0.classNames.count) classes" } ?? "none")
        let sizes = try communicator.allGatherBytes([UInt8](dataFacts.utf8)).map { String(decoding: $0, as: UTF8.self) }
        if let other = sizes.indices.first(where: { sizes[$0] != sizes[0] }) {
            throw PretrainError("rank \(other) read another dataset than rank 0 (\(sizes[other]) against \(sizes[0])); every "
                + "rank must see the same files at the same --data path (a shared file system or identical copies)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let mine = try encoder.encode(plan.configuration)
            + Data("@\(position.epoch).\(position.batch).\(position.step); \(options)".utf8)
        let all = try communicator.allGatherBytes([UInt8](mine))
        if let other = all.indices.first(where: { all[$0] != all[0] }) {
            throw PretrainError("rank \(other) was started with other flags or another checkpoint than rank 0 "
                + "(\(String(decoding: all[other], as: UTF8.self)) against \(String(decoding: all[0], as: UTF8.self))); "
                + "start every rank with the same command line")
        }
    }

    /// Rank 0's two decisions (stop, save) for every rank (a no-op in one process).
    func agree(_ stop: Bool, _ save: Bool) throws -> (Bool, Bool) {
        guard communicator.isDistributed else { return (stop, save) }
        var flags: [Float] = communicator.rank == 0 ? [stop ? 1 : 0, save ? 1 : 0] : [0, 0]
        try communicator.allReduceSum(&flags)
        return (flags[0] > 0, flags[1] > 0)
    }

    /// After every epoch: the ranks' weights, BN buffers and optimizer state must be bitwise equal
    /// (they apply the same all-reduced gradients); a hash of each is compared, and a difference
    /// stops the run naming the rank.
    func checkRanksAgree(after epoch: Int) throws {
        guard communicator.isDistributed else { return }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ values: [Float]) {
            for value in values {
                hash = (hash ^ UInt64(value.bitPattern)) &* 0x0000_0100_0000_01b3
            }
        }
        mix(try model.backend.download(model.parameterTensor))
        mix(try model.backend.download(model.bufferTensor))
        for (_, values) in try optimizer.stateValues(on: model.backend) { mix(values) }
        let all = try communicator.allGatherBytes(withUnsafeBytes(of: hash) { [UInt8]($0) })
        if let other = all.indices.first(where: { all[$0] != all[0] }) {
            throw PretrainError("after epoch \(epoch) the weights of rank \(other) differ from rank 0's; the ranks no longer "
                + "train one model (a device or library that computes differently on one machine?). The last checkpoint "
                + "is rank 0's; resume from it")
        }
    }

    /// A non-finite parameter found between iterations: the last update applied is to blame.
    func parameterDivergence(_ parameter: String, _ error: PretrainError) -> Divergence {
        let blamed = lastApplied ?? (position.epoch, max(position.batch - 1, 0))
        return Divergence(epoch: blamed.epoch, batch: blamed.batch, step: position.step,
                          summary: "after iteration \(position.step) the parameter \(parameter) is not finite", error: error)
    }

    // MARK: Rollback (--on-nonfinite rollback)

    /// Under the rollback policy, at an epoch's first batch and every ``NonFinitePolicy/snapshotEvery``
    /// iterations: copies the training state to the host, if it is all finite (else the last
    /// update is to blame: a ``Divergence``).
    func takeSnapshotIfDue() throws {
        guard nonFinite.action == .rollback else { return }
        if let snapshot, snapshot.position.epoch == position.epoch,
           position.step - snapshot.position.step < nonFinite.snapshotEvery { return }
        let backend = model.backend
        let parameters = try backend.download(model.parameterTensor)
        if let name = firstNonFinite(in: parameters) {
            throw parameterDivergence(name, PretrainError("after iteration \(position.step) the parameter \(name) is not "
                + "finite; \(lastGoodCheckpoint()). Try a lower --lr"))
        }
        var state: [String: [Float]] = [:]
        for (key, values) in try optimizer.stateValues(on: backend) { state[key] = values }
        snapshot = TrainingSnapshot(position: position, parameters: parameters, buffers: try backend.download(model.bufferTensor),
                                    optimizer: state, bank: bank, gradientHistory: gradients.recentNorms, dips: dips)
        lineOffsets = lineOffsets.filter { $0.key >= position.batch }
    }

    /// Under `stop`, throws the divergence's error. Under `rollback`: gives up at the limit, else
    /// cuts the offending batch's metrics line away, restores the snapshot, records the skipped
    /// batch (a `rollback` line in metrics.jsonl and a message) and marks the batches up to it
    /// for a silent replay.
    func rollBack(_ divergence: Divergence) throws {
        guard nonFinite.action == .rollback else { throw divergence.error }
        let recent = skipped.filter { divergence.step - $0.step < nonFinite.window }.count
        guard recent < nonFinite.limit else {
            throw PretrainError("\(divergence.error.description) Gave up after \(recent) rollback\(recent == 1 ? "" : "s") within "
                + "\(nonFinite.window) iterations (--rollback-limit \(nonFinite.limit), --rollback-window \(nonFinite.window))")
        }
        guard let snapshot, snapshot.position.epoch == divergence.epoch, snapshot.position.batch <= divergence.batch else {
            throw PretrainError("\(divergence.error.description) No in-memory snapshot precedes epoch \(divergence.epoch + 1), "
                + "batch \(divergence.batch + 1), so there is nothing to roll back to")
        }
        if let offset = lineOffsets[divergence.batch], offset < metrics.length { try metrics.truncate(to: offset) }
        let backend = model.backend
        try backend.upload(snapshot.parameters, to: model.parameterTensor)
        try backend.upload(snapshot.buffers, to: model.bufferTensor)
        try optimizer.restore(snapshot.optimizer, on: backend)
        bank = snapshot.bank
        if let bank, let deviceBank { try deviceBank.update(from: bank, writtenFrom: 0, count: bank.length) }
        gradients.recentNorms = snapshot.gradientHistory
        dips = snapshot.dips
        position = snapshot.position
        lastApplied = nil
        let skip = SkippedBatch(epoch: divergence.epoch, batch: divergence.batch, step: divergence.step,
                                learningRateScale: nonFinite.learningRateScale)
        skipped.append(skip)
        replayEnd = divergence.batch
        try metrics.writeRollback(skip, restoredStep: snapshot.position.step, reason: divergence.summary)
        let scale = SkippedBatch.learningRateFactor(at: Int.max, 0, skipped: skipped)
        report(.message("warning: \(divergence.summary). "
            + "Rolled back to iteration \(snapshot.position.step), skipping epoch \(skip.epoch + 1) batch \(skip.batch + 1)"
            + (scale == 1 ? "" : String(format: "; the lr is now ×%g", scale))
            + " (rollback \(recent + 1) of at most \(nonFinite.limit) within \(nonFinite.window) iterations)"))
    }

    /// kNN top-1 of the base encoder's features on the held-out split against the training split
    /// (k, T from the configuration); nil without a labeled held-out split.
    func evaluate(epoch: Int) throws -> Double? {
        guard let test = data.test, test.isLabeled, data.train.isLabeled else {
            if epoch == 0 {
                report(.message("kNN evaluation is off: \(data.name) has no labeled held-out split "
                    + "(a val/ folder of class folders, or a test split)"))
            }
            return nil
        }
        let start = Date()
        let extractor = try FeatureExtractor(layout: layout, parameterTensor: model.parameterTensor,
                                             bufferTensor: model.bufferTensor, backend: model.backend,
                                             batchSize: min(256, configuration.batchSize))
        let top1 = try KNNEvaluation(k: configuration.knnK, temperature: configuration.knnT, workers: workers)
            .accuracy(extractor: extractor, train: data.train, test: test, communicator: communicator).top1
        let seconds = Date().timeIntervalSince(start)
        try metrics.writeEvaluation(epoch: epoch, knnTop1: top1, seconds: seconds)
        report(.evaluation(epoch: epoch, knnTop1: top1, seconds: seconds))
        return top1
    }
}
