import Augment
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
    case message(String)
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
    let x1: Tensor, x2: Tensor

    /// Validates `configuration` (one ``PretrainPlan``), then as ``init(plan:backend:data:runFolder:resume:workers:report:)``.
    ///
    /// - Parameters:
    ///   - resume: a checkpoint to continue from; its configuration replaces `configuration`.
    public convenience init(configuration: PretrainConfiguration, backend: any Backend, data: DatasetSplits,
                            runFolder: URL, resume: TrainingCheckpoint.Contents? = nil,
                            workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                            savePolicy: SavePolicy = .default, dipDrop: Double = KNNDipDetector.defaultDrop,
                            report: @escaping (TrainingEvent) -> Void) throws {
        try self.init(plan: resume?.plan ?? PretrainPlan(configuration), backend: backend, data: data,
                      runFolder: runFolder, resume: resume, workers: workers, savePolicy: savePolicy, dipDrop: dipDrop,
                      report: report)
    }

    /// - Parameters:
    ///   - plan: the validated run (with `resume`, the checkpoint's plan, its data path possibly moved).
    ///   - resume: a checkpoint to continue from: its weights, optimizer state, bank and position.
    ///   - savePolicy: when mid-epoch checkpoints are written (``SavePolicy``).
    public init(plan: PretrainPlan, backend: any Backend, data: DatasetSplits, runFolder: URL,
                resume: TrainingCheckpoint.Contents? = nil, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                savePolicy: SavePolicy = .default, dipDrop: Double = KNNDipDetector.defaultDrop,
                report: @escaping (TrainingEvent) -> Void) throws {
        let configuration = plan.configuration
        self.configuration = configuration
        let config = plan.layout.config
        layout = plan.layout
        guard data.train.count >= configuration.batchSize else {
            throw PretrainError("\(data.name) has \(data.train.count) training images, fewer than one batch of "
                + "\(configuration.batchSize); lower -b/--batch-size")
        }
        model = try MoCoModel(parameters: layout, backend: backend, batchSize: configuration.batchSize,
                              initial: resume?.initial ?? layout.initialValues(seed: configuration.seed))
        optimizer = try configuration.optimizer.make(backend: backend, segments: model.trainableSegments,
                                                     weightDecay: configuration.weightDecay)
        if let resume { try optimizer.restore(resume.optimizerState, on: backend) }
        trainingStep = try MoCoTrainingStep(model: model, optimizer: optimizer)
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
        try FileSystem.createDirectory(runFolder)
        lock = try RunLock(folder: runFolder)
        Self.removeStaleTemporaryFiles(in: runFolder)
        try Self.reportSkippedFiles(data, in: runFolder) { report(.message($0)) }
        metrics = try MetricsLog(url: runFolder.appendingPathComponent("metrics.jsonl"))
        let shape = [configuration.batchSize, 3, configuration.imageSize, configuration.imageSize]
        x1 = try backend.makeTensor(shape: shape)
        x2 = try backend.makeTensor(shape: shape)
        if resume == nil, metrics.file.length > 0 {
            // A new run (the CLI refuses a folder with checkpoints unless resuming): what an earlier
            // attempt logged before it died without a checkpoint describes nothing that is kept.
            report(.message("\(metrics.file.url.path) held lines of an earlier attempt that left no checkpoint; starting it afresh"))
            try metrics.file.truncate(to: 0)
        }
        if let resume, let saved = resume.metricsBytes {
            // Lines written after the checkpoint (a kill -9 may leave a torn one) are the resumed
            // run's to write again: cut back to the checkpoint, so no line is duplicated.
            let length = metrics.file.length
            if length > saved {
                try metrics.file.truncate(to: saved)
            } else if length < saved {
                report(.message("warning: \(metrics.file.url.path) is shorter (\(length) bytes) than when \(resume.source) "
                    + "was saved (\(saved) bytes); the metrics before the resume are incomplete"))
            }
            redoEvaluation = position.batch == 0 && position.epoch > 0 && isEvaluationDue(after: position.epoch)
        }
        if resume != nil {
            // The dip detector's state is a function of the monitor values logged so far: replay them.
            let text = (try? String(contentsOf: metrics.file.url, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      object["type"] as? String == "iteration", let value = object["knn_monitor"] as? Double else { continue }
                _ = dips.record(value, iteration: object["step"] as? Int ?? 0)
            }
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
        let augmentation = MoCoAugmentation(imageSize: configuration.imageSize, cropMin: configuration.cropMin)
        var imagesTrained = 0
        var trainingSeconds = 0.0
        training: while position.epoch < configuration.epochs {
            let epoch = position.epoch
            let loader = TrainingBatches(dataset: data.train, augmentation: augmentation,
                                         batchSize: configuration.batchSize, seed: configuration.seed, epoch: epoch,
                                         startBatch: position.batch, workers: workers)
            defer { loader.cancel() }
            var reportedSkips = 0
            var last = Date()
            while let batch = try loader.next() {
                let metrics = try iterate(batch, epoch: epoch, start: last, dataSeconds: Date().timeIntervalSince(last))
                let now = Date()
                trainingSeconds += now.timeIntervalSince(last)
                imagesTrained += configuration.batchSize
                last = now
                summary.lastLoss = metrics.loss
                let skipped = loader.errorDescriptions
                for description in skipped.dropFirst(reportedSkips) { report(.message("skipped unreadable sample: \(description)")) }
                reportedSkips = skipped.count
                if shouldStop(), position.batch < batchesPerEpoch {
                    summary.lastCheckpoint = try saveCheckpoint()
                    break training
                }
                sinceSave.iterations += 1
                if position.batch < batchesPerEpoch,
                   savePolicy.isDue(iterations: sinceSave.iterations, seconds: now.timeIntervalSince(sinceSave.start)) {
                    summary.lastCheckpoint = try saveCheckpoint()
                    sinceSave = (0, Date())
                }
            }
            if loader.skippedSamples > 0 {
                report(.message("epoch \(epoch + 1): \(loader.skippedSamples) unreadable samples were skipped and replaced"))
            }
            position = TrainingPosition(epoch: epoch + 1, batch: 0, step: position.step)
            let due = isEvaluationDue(after: position.epoch)
            // The epoch is saved before its evaluation, so a failing or interrupted evaluation loses nothing.
            summary.lastCheckpoint = try saveCheckpoint()
            sinceSave = (0, Date())
            if due, let top1 = try evaluate(epoch: position.epoch) { summary.knnTop1[position.epoch] = top1 }
            writeReport(seconds: Date().timeIntervalSince(start))
            if shouldStop(), position.epoch < configuration.epochs { break training }
        }
        summary.alarms = AlarmSummary(folder: runFolder)
        summary.completed = position.epoch >= configuration.epochs
        summary.position = position
        summary.seconds = Date().timeIntervalSince(start)
        summary.imagesPerSecond = Double(imagesTrained) / max(trainingSeconds, 1e-9)
        return summary
    }

    /// One step of SPEC A.1 on `batch`, then the monitors. Throws before the optimizer update
    /// when the loss or any gradient is not finite, so the weights and checkpoints stay good.
    func iterate(_ batch: TrainingBatch, epoch: Int, start: Date, dataSeconds: Double) throws -> IterationMetrics {
        let backend = model.backend
        let e = Double(epoch) + Double(batch.batchIndex) / Double(batchesPerEpoch)
        let learningRate = schedules.learningRate(at: e)
        let momentum = schedules.momentum(at: e)
        try backend.upload(batch.x1, to: x1)
        try backend.upload(batch.x2, to: x2)
        let outcome = try trainingStep(x1: x1, x2: x2, learningRate: learningRate, momentum: momentum,
                                       step: position.step + 1)
        let (loss, squared) = (outcome.loss, outcome.squaredNorms)
        guard outcome.applied else {
            throw nonFiniteError(loss: loss, squared: squared, epoch: epoch, batch: batch.batchIndex)
        }
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
                knn = KNNClassifier.accuracy(predicted, labels: batch.labels)
            }
            let keys = try model.momentumFeatures()
            let start = bank!.pointer
            let written = bank!.enqueue(keys, labels: batch.labels)
            try deviceBank.update(from: bank!, writtenFrom: start, count: written)
        }
        let seconds = Date().timeIntervalSince(start)
        let metrics = IterationMetrics(
            epoch: epoch, batch: batch.batchIndex, batchesPerEpoch: batchesPerEpoch, step: position.step,
            loss: Double(loss), learningRate: learningRate, momentum: momentum,
            imagesPerSecond: Double(configuration.batchSize) / max(seconds, 1e-9), dataSeconds: dataSeconds, knnMonitor: knn,
            gradientNorms: zip(gradients.layers.map(\.name), norms).map { ($0, $1) }, spikes: spikes,
            knnDip: knn.flatMap { dips.record($0, iteration: position.step) })
        try self.metrics.write(metrics)
        report(.iteration(metrics))
        return metrics
    }

    /// Names the iteration and the first layer that went non-finite: a parameter first (the
    /// weights were already bad), else the first gradient in forward order.
    func nonFiniteError(loss: Float, squared: [Float], epoch: Int, batch: Int) -> PretrainError {
        var what = "the loss is \(loss)"
        if let parameter = try? firstNonFiniteParameter() {
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
        let values = try model.backend.download(model.parameterTensor)
        for entry in layout.table.entries where values[entry.offset..<(entry.offset + entry.count)].contains(where: { !$0.isFinite }) {
            return entry.name
        }
        return nil
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
            throw PretrainError("after iteration \(position.step) the parameter \(parameter) is not finite; "
                + "no checkpoint was written and \(lastGoodCheckpoint()). Try a lower --lr")
        }
        let url = runFolder.appendingPathComponent(TrainingCheckpoint.fileName(for: position))
        do {
            try TrainingCheckpoint.write(to: url, model: model, optimizer: optimizer, configuration: configuration,
                                         position: position, bank: bank, monitor: gradients,
                                         metricsBytes: metrics.file.length)
        } catch let error as FileSystemError {
            throw error.adding(consequence: "No checkpoint was written for epoch \(position.epoch), batch "
                + "\(position.batch), and \(lastGoodCheckpoint()): resume from it with --resume auto")
        }
        report(.checkpoint(path: url.path))
        try pruneMidEpochCheckpoints()
        return url.path
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
            .accuracy(extractor: extractor, train: data.train, test: test).top1
        let seconds = Date().timeIntervalSince(start)
        try metrics.writeEvaluation(epoch: epoch, knnTop1: top1, seconds: seconds)
        report(.evaluation(epoch: epoch, knnTop1: top1, seconds: seconds))
        return top1
    }
}
