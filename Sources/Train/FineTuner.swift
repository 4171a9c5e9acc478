import Augment
import Datasets
import FileSystem
import Foundation
import Model
import Tensors

/// `mocov3-cl finetune`: end-to-end fine-tuning with DeiT's recipe (paper §6.3–6.4). The whole
/// ViT (``ViTTrunk``; pos_embed stays the frozen sin-cos table) and a new head
/// (`Linear(C, classes)`, weight N(0, 0.02), bias 0, as timm initialises one) train with AdamW
/// at `lr × B/512`, timm's weight-decay split (none on biases, norms and `cls_token`), a warmup
/// then a cosine per iteration, on RandomResizedCrop + flip views mixed by mixup or cutmix into
/// label-smoothed soft targets (soft-target cross-entropy), with stochastic depth rising linearly
/// over the blocks. Every epoch measures the held-out top-1 and top-5 in evaluation mode.
///
/// Randomness is a pure function of (seed, epoch, batch): the data order and views as in
/// pre-training, and per batch the mixup/cutmix draw and the drop-path masks, so `--resume` is
/// bit-identical on the host.
public final class FineTuner: ClassifierTraining {
    public let configuration: FineTuneConfiguration
    public let backend: any Backend
    public let trunk: ViTTrunk
    public let head: ClassifierHead
    /// AdamW over the trunk's decayed tensors, its other tensors, the head's weight and its bias.
    public let optimizers: [(optimizer: AdamW, buffer: Buffer, entries: [ParameterTable.Entry])]
    public let classes: Int
    public let runFolder: URL
    public let source: String
    let data: DatasetSplits
    let test: any ImageDataset
    let extractor: FeatureExtractor
    let featureGradient: Tensor
    let staging: Tensor
    let mixup: Mixup
    let dropPathRates: [Double]
    let dropFactors: [(attention: Tensor?, mlp: Tensor?)]
    let workers: Int
    let report: (ClassifierEvent) -> Void
    let metrics: MetricsLog
    /// Held from init to the end of `run()`: a second run on the same folder is refused, naming this PID.
    var lock: RunLock?
    public internal(set) var position: TrainingPosition
    public internal(set) var best: (top1: Double, epoch: Int)

    /// timm's `create_optimizer` split, one AdamW each: the trunk's decayed tensors (≥ 2-D weights),
    /// its other trainable tensors (biases, norms, `cls_token`), the head's weight, the head's bias.
    static func optimizerGroups(trunk: ViTLayout, head: ParameterTable)
        -> [(buffer: Buffer, entries: [ParameterTable.Entry], decayed: Bool)] {
        let trainable = trunk.table.entries.filter(\.trainable)
        return [(.trunk, trainable.filter(ViTTrunk.isDecayed), true), (.trunk, trainable.filter { !ViTTrunk.isDecayed($0) }, false),
                (.head, [head.entries[0]], true), (.head, [head.entries[1]], false)]
    }

    /// Which flat buffer an optimizer updates.
    public enum Buffer: String, Sendable { case trunk, head }

    public init(configuration: FineTuneConfiguration, backend: any Backend, data: DatasetSplits, runFolder: URL,
                resume: FineTuneCheckpoint.Contents? = nil, startingTrunk: StartingTrunk? = nil, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                report: @escaping (ClassifierEvent) -> Void) throws {
        let configuration = resume?.configuration ?? configuration
        try configuration.validate()
        self.configuration = configuration
        self.backend = backend
        self.data = data
        (test, classes) = try labeledSplits(data, purpose: "fine-tuning", resumed: resume.map { ($0.classes, $0.source) })
        guard data.train.count >= configuration.batchSize else {
            throw PretrainError("\(data.name) has \(data.train.count) training images, fewer than one batch of "
                + "\(configuration.batchSize); lower -b/--batch-size")
        }
        let values: StartingTrunk
        if let resume {
            values = StartingTrunk(resume.trunk, source: resume.source)
        } else {
            values = try startingTrunk ?? StartingTrunk(features: configuration.randomInit ? .randomInit : .pretrained,
                                                        pretrained: configuration.pretrained, heads: configuration.heads,
                                                        seed: configuration.seed)
        }
        source = values.source
        let B = configuration.batchSize
        trunk = try ViTTrunk(layout: values.layout, backend: backend, batchSize: B, parameters: values.parameters,
                             buffers: values.buffers)
        // Evaluation runs through the trunk's own activations (between steps), not a second set.
        extractor = FeatureExtractor(sharing: trunk)
        let width = values.layout.config.embedDim
        head = try ClassifierHead(backend: backend, width: width, classes: classes, batchSize: B, batchNorm: false)
        featureGradient = try backend.makeTensor(shape: [B, width])
        staging = try backend.makeTensor(shape: [B, width])
        optimizers = try Self.optimizerGroups(trunk: values.layout, head: head.table).map { group in
            let segments = SegmentTable(group.entries.map {
                SegmentTable.Segment(offset: $0.offset, count: $0.count, adapted: $0.shape.count > 1)
            })
            return (try AdamW(backend: backend, segments: segments, weightDecay: group.decayed ? configuration.weightDecay : 0),
                    group.buffer, group.entries)
        }
        mixup = Mixup(mixupAlpha: configuration.mixup, cutmixAlpha: configuration.cutmix,
                      switchProbability: configuration.mixupSwitchProbability, probability: configuration.mixupProbability,
                      smoothing: configuration.smoothing, classes: classes)
        dropPathRates = configuration.dropPathRates(depth: values.layout.config.depth)
        dropFactors = try dropPathRates.map { rate in
            rate > 0 ? (try backend.makeTensor(shape: [B]), try backend.makeTensor(shape: [B])) : (nil, nil)
        }
        if let resume {
            try head.load(weight: resume.head.weight, bias: resume.head.bias)
            for (index, optimizer) in optimizers.enumerated() {
                try optimizer.optimizer.restore(resume.optimizerStates[index], on: backend)
            }
            position = resume.position
            best = (resume.bestTop1, resume.bestEpoch)
        } else {
            var generator = SplitMix64(seed: AugmentationSeed.hash(configuration.seed, 0x6865_6164)) // "head"
            try head.load(weight: (0..<(classes * width)).map { _ in Float(generator.nextGaussian() * 0.02) },
                          bias: [Float](repeating: 0, count: classes))
            position = TrainingPosition()
            best = (0, 0)
        }
        self.runFolder = runFolder
        self.workers = max(1, workers)
        self.report = report
        try FileSystem.createDirectory(runFolder)
        lock = try RunLock(folder: runFolder)
        try Pretrainer.reportSkippedFiles(data, in: runFolder) { report(.message($0)) }
        metrics = try MetricsLog(url: runFolder.appendingPathComponent("metrics.jsonl"))
    }

    var batchesPerEpoch: Int { data.train.count / configuration.batchSize }

    /// One optimizer step on a batch of already mixed images (B, 3, S, S) and their soft targets
    /// (B, K): forward with `dropPath`, soft-target cross-entropy, the backward through the head
    /// into the trunk, the four AdamW updates. Returns the loss; throws before any update when it
    /// is not finite.
    public func trainStep(images: [Float], targets: [Float], dropPath: DropPath?, learningRate: Double, step: Int) throws -> Float {
        let features = try trunk.forward(pixels: images, dropPath: dropPath)
        let loss = try head.lossAndGradients(features: features, targets: targets, featureGradient: featureGradient)
        guard loss.isFinite else {
            throw PretrainError("the fine-tuning loss became \(loss) at iteration \(step); the update was not applied. "
                + "Try a lower --lr or more --warmup-epochs")
        }
        try trunk.backward(featureGradient: featureGradient, dropPath: dropPath)
        for (optimizer, buffer, _) in optimizers {
            let (parameters, gradients) = buffer == .trunk ? (trunk.parameterTensor, trunk.gradientTensor)
                : (head.parameterTensor, head.gradientTensor)
            try optimizer.step(parameters: parameters, gradients: gradients, learningRate: learningRate, step: step)
        }
        return loss
    }

    /// The drop-path factors of batch `batch` in `epoch` (per block with a positive rate, per
    /// sample `keep/(1 − p)` or 0), uploaded into the step's tensors.
    func dropPath(epoch: Int, batch: Int) throws -> DropPath? {
        guard dropPathRates.contains(where: { $0 > 0 }) else { return nil }
        var generator = SplitMix64(seed: AugmentationSeed.hash(configuration.seed, UInt64(epoch), UInt64(batch), 0x4452_4f50)) // "DROP"
        for (rate, tensors) in zip(dropPathRates, dropFactors) where rate > 0 {
            for tensor in [tensors.attention!, tensors.mlp!] {
                let keep = 1 - rate
                try backend.upload((0..<configuration.batchSize).map { _ in generator.nextUnitDouble() < keep ? Float(1 / keep) : 0 },
                                   to: tensor)
            }
        }
        return DropPath(attention: dropFactors.map(\.attention), mlp: dropFactors.map(\.mlp))
    }

    public func run(shouldStop: @escaping () -> Bool = { false }) throws -> ClassifierSummary {
        defer { lock = nil }
        return try runEpochs(shouldStop: shouldStop)
    }

    var epochs: Int { configuration.epochs }
    var deviceName: String { backend.name }
    var command: String { "finetune" }
    func prepareRun() throws {}
    func endOfEpoch() throws {}

    func learningRate(epoch: Int, batch: Int) -> Double {
        configuration.learningRate(at: Double(epoch) + Double(batch) / Double(batchesPerEpoch))
    }

    func batches(epoch: Int, from first: Int) throws -> () throws -> ClassifierBatch? {
        // drop_last=True, as DeiT: mixup pairs each image with the flipped batch's.
        augmentedBatches(data.train, imageSize: trunk.layout.config.imageSize, cropMin: configuration.cropMin,
                         batchSize: configuration.batchSize, seed: configuration.seed, epoch: epoch, from: first,
                         dropLast: true, workers: workers)
    }

    /// The batch mixed by its mixup/cutmix draw, then ``trainStep(images:targets:dropPath:learningRate:step:)``
    /// with its drop-path masks.
    func train(_ batch: ClassifierBatch, epoch: Int, learningRate: Double, step: Int) throws -> Float {
        let imageSize = trunk.layout.config.imageSize
        var generator = SplitMix64(seed: AugmentationSeed.hash(configuration.seed, UInt64(epoch), UInt64(batch.batchIndex),
                                                               0x4d49_5855)) // "MIXU"
        var images = batch.values
        let targets = mixup.apply(mixup.draw(imageSize: imageSize, using: &generator), images: &images,
                                  labels: batch.labels, imageSize: imageSize)
        return try trainStep(images: images, targets: targets, dropPath: try dropPath(epoch: epoch, batch: batch.batchIndex),
                             learningRate: learningRate, step: step)
    }

    /// Held-out top-1, top-5 and cross-entropy, the trunk in evaluation mode (ViT-BN on its running statistics).
    public func evaluate() throws -> (top1: Double, top5: Double, loss: Double) {
        let features = try LinearProbe.evaluationFeatures(test, extractor: extractor, imageSize: trunk.layout.config.imageSize,
                                                          batchSize: configuration.batchSize, workers: workers, report: report)
        return try head.score(features: features.values, labels: features.labels, staging: staging, dataName: data.name)
    }

    @discardableResult
    public func saveCheckpoint(isBest: Bool = false) throws -> String {
        let url = runFolder.appendingPathComponent(FineTuneCheckpoint.lastName)
        try FineTuneCheckpoint.write(to: url, tuner: self)
        report(.checkpoint(path: url.path))
        if isBest { try FineTuneCheckpoint.write(to: runFolder.appendingPathComponent(FineTuneCheckpoint.bestName), tuner: self) }
        return url.path
    }
}
