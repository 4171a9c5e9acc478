import Augment
import Datasets
import FileSystem
import Foundation
import Model
import Tensors

/// Events a classifier run (`lincls`, `finetune`) reports to whoever shows them.
public enum ClassifierEvent: Sendable {
    case message(String)
    case iteration(ClassifierIteration)
    case epoch(ClassifierEpoch)
    case checkpoint(path: String)
}

/// One optimizer step of a classifier run.
public struct ClassifierIteration: Sendable {
    public var epoch: Int
    public var batch: Int
    public var batchesPerEpoch: Int
    public var epochs: Int
    public var step: Int
    public var loss: Double
    public var learningRate: Double
    public var imagesPerSecond: Double
}

/// One epoch of a classifier run, evaluated on the held-out split.
public struct ClassifierEpoch: Sendable {
    /// 1-based: the number of epochs completed.
    public var epoch: Int
    public var trainLoss: Double
    public var learningRate: Double
    public var validationLoss: Double
    public var top1: Double
    public var top5: Double
    public var bestTop1: Double
    public var bestEpoch: Int
    public var seconds: Double
}

/// How a classifier run ended.
public struct ClassifierSummary: Sendable {
    public var completed: Bool
    public var position: TrainingPosition
    public var lastTop1: Double?
    public var lastTop5: Double?
    public var bestTop1: Double
    public var bestEpoch: Int
    public var seconds: Double
    public var lastCheckpoint: String?
}

/// The trunk a classifier run starts from: a weights file's (any kind ``PretrainedViT`` reads), or
/// the initialisation of its architecture (or of the default pre-training run's ViT).
public struct StartingTrunk {
    public let layout: ViTLayout
    public let parameters: [Float]
    public let buffers: [Float]
    /// Where it came from, for the log and errors.
    public let source: String

    public init(layout: ViTLayout, parameters: [Float], buffers: [Float], source: String) {
        self.layout = layout
        self.parameters = parameters
        self.buffers = buffers
        self.source = source
    }

    /// The trunk `vit` read from a file.
    public init(_ vit: PretrainedViT, source: String) {
        self.init(layout: vit.layout, parameters: vit.parameters, buffers: vit.buffers, source: source)
    }

    /// Reads `pretrained` (`.pretrained`), or initialises from `seed` the architecture of
    /// `pretrained` or, without one, the default pre-training run's ViT (`.randomInit`).
    public init(features: LinearProbeConfiguration.Features, pretrained: String?, heads: Int?, seed: UInt64) throws {
        switch features {
        case .rawPixels:
            throw PretrainError("--raw-pixels has no trunk")
        case .pretrained:
            guard let pretrained else { throw PretrainError("pass --pretrained FILE, or --random-init") }
            let url = URL(fileURLWithPath: pretrained)
            let vit = try PretrainedViT(file: SafetensorsFile(contentsOf: url), heads: heads)
            self.init(vit, source: "\(url.path) (\(vit.origin.rawValue))")
        case .randomInit:
            let vitConfig: ViTConfig
            var source = "the default pre-training run's ViT"
            if let pretrained {
                vitConfig = try PretrainedViT(file: SafetensorsFile(contentsOf: URL(fileURLWithPath: pretrained)),
                                              heads: heads).layout.config
                source = "the architecture of \(pretrained)"
            } else {
                vitConfig = try PretrainConfiguration.defaultRun.modelConfig().vit
            }
            let layout = try ViTLayout(vitConfig)
            let values = try layout.initialValues(seed: seed)
            self.init(layout: layout, parameters: values.parameters, buffers: values.buffers,
                      source: "\(source) at its initialisation (seed \(seed))")
        }
    }
}

/// `mocov3-cl lincls`: the linear probe of `main_lincls.py` (SPEC A.8). A frozen trunk in
/// evaluation mode for the whole run (ViT-BN on its running statistics) feeds a fresh
/// `Linear(C, classes)` (weight N(0, 0.01), bias 0), trained with SGD (momentum 0.9, wd 0) at
/// `lr × B/256` with a cosine decay set once per epoch; every epoch the held-out split's top-1 and
/// top-5 are measured and the best is kept. After the first epoch the trunk is checked to be
/// bitwise unchanged, as the reference's `sanity_check` does.
///
/// Protocols: the reference's (each epoch runs the trunk on RandomResizedCrop + flip views of the
/// training split) or `cachedFeatures` (the evaluation transform's features computed once; only
/// the head trains; a documented deviation). Baselines: raw pixels (the head on the normalised
/// pixels) and the same ViT at initialisation.
///
/// The run folder receives `metrics.jsonl`, `checkpoint.safetensors` after every epoch (and on
/// request mid-epoch) and `model_best.safetensors` (``LinearProbeCheckpoint``). The data order
/// and augmentation are pure functions of (seed, epoch, index), so a resumed run is bit-identical
/// on the host.
public final class LinearProbe: ClassifierTraining {
    public let configuration: LinearProbeConfiguration
    public let backend: any Backend
    public let head: ClassifierHead
    public let optimizer: SGD
    /// The trunk (nil for raw pixels): its layout, tensors and the values it must keep.
    public let trunk: Trunk?
    public let classes: Int
    public let runFolder: URL
    let data: DatasetSplits
    let test: any ImageDataset
    let extractor: FeatureExtractor?
    /// (B, width): what the head reads when the features come from the host (raw pixels, the cache).
    let hostFeatures: Tensor
    let width: Int
    let imageSize: Int
    let workers: Int
    let report: (ClassifierEvent) -> Void
    let metrics: MetricsLog
    /// Held from init to the end of `run()`: a second run on the same folder is refused, naming this PID.
    var lock: RunLock?
    public internal(set) var position: TrainingPosition
    public internal(set) var best: (top1: Double, epoch: Int)
    /// Set after the first epoch this process ran, when the trunk was found unchanged.
    public private(set) var frozenTrunkChecked = false
    var cache: (train: [Float], trainLabels: [Int32], test: [Float], testLabels: [Int32])?

    /// A frozen ViT trunk on the device.
    public struct Trunk {
        public let layout: ViTLayout
        public let parameterTensor: Tensor
        public let bufferTensor: Tensor
        /// The values loaded (from the file, or the initialisation): the trunk must keep them bitwise.
        public let expected: (parameters: [Float], buffers: [Float])
        /// Where they came from, for the log and errors.
        public let source: String
    }

    /// - Parameters:
    ///   - resume: a lincls checkpoint to continue from; its configuration replaces `configuration`.
    ///   - startingTrunk: the trunk of a fresh run when the caller has already read it
    ///     (``StartingTrunk/init(_:)``, so a bad file fails before the device and data are opened).
    public init(configuration: LinearProbeConfiguration, backend: any Backend, data: DatasetSplits, runFolder: URL,
                resume: LinearProbeCheckpoint.Contents? = nil, startingTrunk: StartingTrunk? = nil,
                workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                report: @escaping (ClassifierEvent) -> Void) throws {
        let configuration = resume?.configuration ?? configuration
        try configuration.validate()
        self.configuration = configuration
        self.backend = backend
        self.data = data
        (test, classes) = try labeledSplits(data, purpose: "a linear probe", resumed: resume.map { ($0.classes, $0.source) })
        if configuration.bnHead, data.train.count % configuration.batchSize == 1 {
            throw PretrainError("\(data.train.count) training images leave a last batch of 1 at -b \(configuration.batchSize), "
                + "and --bn-head cannot normalise one sample; choose another -b")
        }

        // The trunk: from the checkpoint being resumed, the pretrained file, or its initialisation.
        let trunkValues: StartingTrunk?
        if let resume {
            trunkValues = resume.trunk.map { StartingTrunk($0, source: resume.source) }
        } else if configuration.features == .rawPixels {
            trunkValues = nil
        } else {
            trunkValues = try startingTrunk ?? StartingTrunk(features: configuration.features, pretrained: configuration.pretrained,
                                                             heads: configuration.heads, seed: configuration.seed)
        }
        if let trunkValues {
            let parameters = try backend.makeFlatTensor(trunkValues.parameters)
            let buffers = try backend.makeFlatTensor(trunkValues.buffers)
            let trunk = Trunk(layout: trunkValues.layout, parameterTensor: parameters, bufferTensor: buffers,
                              expected: (trunkValues.parameters, trunkValues.buffers), source: trunkValues.source)
            self.trunk = trunk
            extractor = try FeatureExtractor(layout: trunk.layout, parameterTensor: parameters, bufferTensor: buffers,
                                             backend: backend, batchSize: configuration.batchSize)
            width = trunk.layout.config.embedDim
            imageSize = trunk.layout.config.imageSize
        } else {
            trunk = nil
            extractor = nil
            imageSize = configuration.imageSize
            width = 3 * imageSize * imageSize
        }
        head = try ClassifierHead(backend: backend, width: width, classes: classes, batchSize: configuration.batchSize,
                                  batchNorm: configuration.bnHead)
        optimizer = try SGD(backend: backend, segments: head.segments, weightDecay: configuration.weightDecay,
                            momentum: configuration.momentum)
        if let resume {
            try head.load(weight: resume.head.weight, bias: resume.head.bias)
            if let statistics = resume.headNormalization { try head.loadNormalization(statistics) }
            try optimizer.restore(resume.optimizerState, on: backend)
            position = resume.position
            best = (resume.bestTop1, resume.bestEpoch)
        } else {
            try head.load(weight: ClassifierHead.initialWeight(classes: classes, width: width, seed: configuration.seed),
                          bias: [Float](repeating: 0, count: classes))
            position = TrainingPosition()
            best = (0, 0)
        }
        hostFeatures = try backend.makeTensor(shape: [configuration.batchSize, width])
        self.runFolder = runFolder
        self.workers = max(1, workers)
        self.report = report
        try FileSystem.createDirectory(runFolder)
        lock = try RunLock(folder: runFolder)
        try Pretrainer.reportSkippedFiles(data, in: runFolder) { report(.message($0)) }
        metrics = try MetricsLog(url: runFolder.appendingPathComponent("metrics.jsonl"))
    }

    var batchesPerEpoch: Int { (data.train.count + configuration.batchSize - 1) / configuration.batchSize }

    /// Trains from the current position to the last epoch, or until `shouldStop` returns true
    /// between iterations (then it writes a checkpoint of the position reached).
    public func run(shouldStop: @escaping () -> Bool = { false }) throws -> ClassifierSummary {
        defer { lock = nil }
        return try runEpochs(shouldStop: shouldStop)
    }

    var epochs: Int { configuration.epochs }
    var deviceName: String { backend.name }
    var command: String { "lincls" }

    func prepareRun() throws {
        if configuration.cachedFeatures, cache == nil { try buildCache() }
    }

    func learningRate(epoch: Int, batch: Int) -> Double { configuration.learningRate(epoch: epoch) }

    func train(_ batch: ClassifierBatch, epoch: Int, learningRate: Double, step: Int) throws -> Float {
        let loss = try head.lossAndGradients(features: try trainingFeatures(batch), labels: batch.labels)
        guard loss.isFinite else {
            throw PretrainError("the probe's loss became \(loss) at epoch \(epoch + 1), batch \(batch.batchIndex + 1) "
                + "(lr \(learningRate)); the update was not applied. Try a lower --lr, or --bn-head")
        }
        try optimizer.step(parameters: head.parameterTensor, gradients: head.gradientTensor, learningRate: learningRate,
                           step: step)
        return loss
    }

    func endOfEpoch() throws {
        if !frozenTrunkChecked { try checkFrozenTrunk() }
    }

    /// The epoch's batches from `first` on, in the order of (seed, epoch): a function returning
    /// the next one, nil after the last; it throws only when no training sample can be read.
    func batches(epoch: Int, from first: Int) throws -> () throws -> ClassifierBatch? {
        if let cache {
            var shuffle = AugmentationSeed.shuffleGenerator(seed: configuration.seed, epoch: epoch)
            let order = shuffle.permutation(cache.trainLabels.count)
            let (B, width, count) = (configuration.batchSize, self.width, batchesPerEpoch)
            var b = first
            return {
                guard b < count else { return nil }
                defer { b += 1 }
                let rows = order[(b * B)..<min((b + 1) * B, order.count)]
                var values = [Float]()
                values.reserveCapacity(rows.count * width)
                for row in rows { values += cache.train[(row * width)..<((row + 1) * width)] }
                return ClassifierBatch(batchIndex: b, labels: rows.map { cache.trainLabels[$0] }, values: values)
            }
        }
        // drop_last=False, as the reference's train loader: the short last batch trains too.
        return augmentedBatches(data.train, imageSize: imageSize, cropMin: configuration.cropMin,
                                batchSize: configuration.batchSize, seed: configuration.seed, epoch: epoch, from: first,
                                dropLast: false, workers: workers)
    }

    /// The features the head reads for a training batch, on the device.
    func trainingFeatures(_ batch: ClassifierBatch) throws -> Tensor {
        let count = batch.labels.count
        if cache == nil, let extractor { return try extractor.featureTensor(of: batch.values, count: count) }
        try backend.upload(batch.values, to: hostFeatures.view(offset: 0, shape: [count, width]))
        return hostFeatures
    }

    func evaluationFeatures(_ dataset: any ImageDataset) throws -> (values: [Float], labels: [Int32]) {
        try Self.evaluationFeatures(dataset, extractor: extractor, imageSize: imageSize,
                                    batchSize: configuration.batchSize, workers: workers,
                                    report: report)
    }

    /// Features of the evaluation transform for every sample of `dataset` (without an extractor,
    /// the normalised pixels), with its labels; unreadable samples are left out and reported.
    static func evaluationFeatures(_ dataset: any ImageDataset, extractor: FeatureExtractor?, imageSize: Int,
                                   batchSize: Int, workers: Int, report: (ClassifierEvent) -> Void) throws
        -> (values: [Float], labels: [Int32]) {
        let width = extractor?.config.embedDim ?? 3 * imageSize * imageSize
        let result = try Embeddings.collect(dataset, imageSize: imageSize, width: width, batchSize: batchSize, workers: workers) {
            batch in try extractor.map { try $0.features(of: batch.x, count: batch.labels.count) } ?? batch.x
        }
        if !result.skipped.isEmpty {
            report(.message("\(result.skipped.count) unreadable samples were left out of the features: "
                + result.skipped.prefix(3).joined(separator: "; ")))
        }
        return (result.features, result.labels)
    }

    /// `--cached-features`: both splits through the evaluation transform and the trunk, once.
    func buildCache() throws {
        let start = Date()
        let train = try evaluationFeatures(data.train)
        let test = try evaluationFeatures(self.test)
        cache = (train.values, train.labels, test.values, test.labels)
        report(.message(String(format: "cached the features of %d train and %d test images (%d wide) in %.1f s",
                               train.labels.count, test.labels.count, width, Date().timeIntervalSince(start))))
    }

    /// Top-1, top-5 and the mean cross-entropy on the held-out split, the head in evaluation mode.
    public func evaluate() throws -> (top1: Double, top5: Double, loss: Double) {
        let features = try cache.map { ($0.test, $0.testLabels) } ?? evaluationFeatures(test)
        return try head.score(features: features.0, labels: features.1, staging: hostFeatures, dataName: data.name)
    }

    /// The reference's `sanity_check`: every trunk tensor and buffer still holds the loaded
    /// values, bit for bit. A difference means the frozen trunk was written to: the run stops.
    public func checkFrozenTrunk() throws {
        defer { frozenTrunkChecked = true }
        guard let trunk else { return }
        let parameters = try backend.download(trunk.parameterTensor)
        for entry in trunk.layout.table.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            if !zip(parameters[range], trunk.expected.parameters[range]).allSatisfy({ $0.bitPattern == $1.bitPattern }) {
                throw PretrainError("the frozen trunk changed: \(entry.name) no longer equals its value from "
                    + "\(trunk.source). The linear probe must not train the backbone; this is a bug, please report it")
            }
        }
        if !trunk.expected.buffers.isEmpty {
            let buffers = try backend.download(trunk.bufferTensor)
            for entry in trunk.layout.buffers.entries {
                let range = entry.offset..<(entry.offset + entry.count)
                if !zip(buffers[range], trunk.expected.buffers[range]).allSatisfy({ $0.bitPattern == $1.bitPattern }) {
                    throw PretrainError("the frozen trunk changed: the BatchNorm buffer \(entry.name) no longer equals "
                        + "its value from \(trunk.source) (the trunk must stay in evaluation mode); this is a bug")
                }
            }
        }
        report(.message("sanity check passed: the trunk is bitwise unchanged after the first epoch"))
    }

    /// Writes `checkpoint.safetensors` (and `model_best.safetensors` when `isBest`); returns its path.
    @discardableResult
    public func saveCheckpoint(isBest: Bool = false) throws -> String {
        let url = runFolder.appendingPathComponent(LinearProbeCheckpoint.lastName)
        try LinearProbeCheckpoint.write(to: url, probe: self)
        report(.checkpoint(path: url.path))
        if isBest {
            let bestURL = runFolder.appendingPathComponent(LinearProbeCheckpoint.bestName)
            try LinearProbeCheckpoint.write(to: bestURL, probe: self)
        }
        return url.path
    }
}
