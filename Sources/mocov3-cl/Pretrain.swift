import ArgumentParser
import Datasets
import Dispatch
import Foundation
import Tensors
import Model
import Train

/// `mocov3-cl pretrain`: MoCo v3 pre-training with the reference's `main_moco.py` flags.
/// Without flags it trains the default run (a 4-block ViT on Fashion-MNIST, about 15 minutes on
/// two cores with `--device host`).
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pre-train a ViT with MoCo v3 (flags as the reference's main_moco.py).",
        discussion: """
        With no flags: the default run (README, "The default run"). A run folder (--output) receives
        metrics.jsonl, config.json and a checkpoint per epoch; Ctrl-C writes a checkpoint of the
        iteration reached, and --resume auto continues from the newest.
        """)

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "fashion-mnist (default), an image folder (root/train/<class>/…, optional root/val), or a CIFAR binary folder.")
    var data: String?
    @Option(help: "Run folder for metrics, config and checkpoints.") var output = "runs/pretrain"
    @Option(help: "Continue from a checkpoint file, or 'auto' for the run folder's newest.") var resume: String?

    @Option(name: [.customShort("a"), .long], help: "vit_tiny, vit_small, vit_base, vit_large, vit_huge (default: vit_tiny narrowed to 128 wide, 4 blocks, 4 heads).")
    var arch: String?
    @Option(help: "Override the preset's width.") var embedDim: Int?
    @Option(help: "Override the preset's depth.") var depth: Int?
    @Option(help: "Override the preset's heads.") var heads: Int?
    @Option(help: "Image side after the crop (default 28).") var imageSize: Int?
    @Option(help: "Patch side (default 7).") var patchSize: Int?
    @Option(help: "Projector/predictor output width (default 256).") var mocoDim: Int?
    @Option(help: "Projector/predictor hidden width (default 1024; the reference's 4096).") var mocoMlpDim: Int?
    @Option(help: "Softmax temperature T (default 0.2).") var mocoT: Double?
    @Option(help: "EMA momentum m0 (default 0.99).") var mocoM: Double?
    @Flag(inversion: .prefixedNo, help: "Cosine schedule for m from m0 to 1 (default on).") var mocoMCos: Bool?
    @Flag(inversion: .prefixedNo, help: "Freeze the random patch projection (default on; paper Sec. 4.1).")
    var stopGradConv1: Bool?
    @Option(help: "Feature: cls (the class token, default) or avg (global average pooling; paper Sec. 6.1).")
    var pooling: String?
    @Flag(inversion: .prefixedNo, help: "BatchNorm instead of LayerNorm before each block's MLP (ViT-BN, paper Table 1; default off).")
    var vitBn: Bool?
    @Option(help: "Position embedding: sincos (default) or none (paper Table 6).") var posEmbed: String?

    @Option(name: [.customShort("b"), .long], help: "Total batch size (default 256).") var batchSize: Int?
    @Option(help: "Epochs (default 3).") var epochs: Int?
    @Option(help: "Warmup epochs, may be fractional (default 0.5).") var warmupEpochs: Double?
    @Option(help: "adamw (default) or lars.") var optimizer: String?
    @Option(name: [.customLong("lr"), .customLong("learning-rate")], help: "Base lr; actual lr = lr × batch / 256 (default 1.5e-3).")
    var lr: Double?
    @Option(name: [.customLong("weight-decay"), .customLong("wd")], help: "Weight decay (default 0.1).") var weightDecay: Double?
    @Option(help: "Smallest RandomResizedCrop scale (default 0.2).") var cropMin: Double?
    @Option(help: "Seed of the init, the data order and the augmentations (default 0).") var seed: UInt64?

    @Option(help: "Dense kNN monitor bank length (default 10% of the training set).") var knnBank: Int?
    @Option(help: "Run the dense kNN monitor every N iterations (0: off; default 1).") var knnEvery: Int?
    @Option(help: "k of the kNN classifier (default 200).") var knnK: Int?
    @Option(help: "Temperature of the kNN vote (default 0.07).") var knnT: Double?
    @Option(help: "kNN evaluation on the held-out split every N epochs (0: off; default 1).") var evalEvery: Int?
    @Option(help: "Warn when a layer's gradient norm exceeds this multiple of its recent median (default 10).")
    var spikeFactor: Double?

    @Option(name: [.customShort("p"), .long], help: "Print a log line every N iterations (default 10).") var printFreq = 10
    @Option(name: [.customShort("j"), .long], help: "Data loader threads (default: all cores).") var workers: Int?

    /// The configuration the flags ask for, on top of `base` (the default run or a checkpoint's).
    func configuration(over base: PretrainConfiguration) throws -> (PretrainConfiguration, [String]) {
        var c = base
        var given: [String] = []
        func set<T: Equatable>(_ flag: String, _ value: T?, _ keyPath: WritableKeyPath<PretrainConfiguration, T>) {
            guard let value else { return }
            if c[keyPath: keyPath] != value { given.append(flag) }
            c[keyPath: keyPath] = value
        }
        if let arch {
            if c.arch != arch || base.embedDim != 0 { given.append("--arch") }
            c.arch = arch
            (c.embedDim, c.depth, c.heads) = (0, 0, 0)
        }
        set("--embed-dim", embedDim, \.embedDim)
        set("--depth", depth, \.depth)
        set("--heads", heads, \.heads)
        set("--image-size", imageSize, \.imageSize)
        set("--patch-size", patchSize, \.patchSize)
        set("--moco-dim", mocoDim, \.mocoDim)
        set("--moco-mlp-dim", mocoMlpDim, \.mocoMLPDim)
        set("--moco-t", mocoT, \.mocoT)
        set("--moco-m", mocoM, \.mocoM)
        set("--moco-m-cos", mocoMCos, \.mocoMCos)
        set("--stop-grad-conv1", stopGradConv1, \.stopGradConv1)
        set("--pooling", pooling, \.pooling)
        set("--vit-bn", vitBn, \.vitBN)
        set("--pos-embed", posEmbed, \.positionEmbedding)
        set("--batch-size", batchSize, \.batchSize)
        set("--epochs", epochs, \.epochs)
        set("--warmup-epochs", warmupEpochs, \.warmupEpochs)
        if let optimizer {
            guard let kind = OptimizerKind(rawValue: optimizer) else {
                throw ValidationError("--optimizer must be adamw or lars, got \(optimizer)")
            }
            set("--optimizer", kind, \.optimizer)
        }
        set("--lr", lr, \.lr)
        set("--weight-decay", weightDecay, \.weightDecay)
        set("--crop-min", cropMin, \.cropMin)
        set("--seed", seed, \.seed)
        set("--data", data, \.data)
        set("--knn-bank", knnBank, \.knnBank)
        set("--knn-every", knnEvery, \.knnEvery)
        set("--knn-k", knnK, \.knnK)
        set("--knn-t", knnT, \.knnT)
        set("--eval-every", evalEvery, \.evalEvery)
        set("--spike-factor", spikeFactor, \.spikeFactor)
        return (c, given)
    }

    func validate() throws {
        guard printFreq >= 1 else { throw ValidationError("--print-freq must be at least 1, got \(printFreq)") }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1, got \(workers)") }
        if resume == nil {
            let (c, _) = try configuration(over: .defaultRun)
            do { try c.validate() } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let folder = URL(fileURLWithPath: output)
        var resumed: TrainingCheckpoint.Contents?
        if let resume { resumed = try loadResume(resume, folder: folder) }
        let (configuration, changed) = try configuration(over: resumed?.configuration ?? .defaultRun)
        if let resumed {
            // A resumed run continues the stored run exactly; changing it midway is a new run.
            let conflicting = changed.filter { $0 != "--data" }
            guard conflicting.isEmpty else {
                throw ValidationError("\(resumed.source) was trained with other values of "
                    + conflicting.joined(separator: ", ") + "; drop those flags to continue it, or start a new run with a new --output")
            }
        } else if !TrainingCheckpoint.candidates(in: folder).isEmpty {
            throw ValidationError("\(folder.path) already holds checkpoints of a run; continue it with --resume auto, "
                + "or choose another --output")
        }
        try configuration.validate()
        // On resume only --data may change (the same data, moved): later checkpoints record the new path.
        resumed?.configuration.data = configuration.data
        let backendName = try DeviceCatalog().resolveName(requested: deviceOptions.device)
        let splits = try DatasetSource.open(configuration.data == "fashion-mnist" ? nil : configuration.data)
        let backend = try deviceOptions.makeBackend()
        let layout = try MoCoParameters(configuration.modelConfig())
        let display = ProgressDisplay(printFrequency: printFreq, epochs: configuration.epochs)
        display.log("mocov3-cl pretrain on \(backendName): \(splits.name), \(splits.train.summary)")
        if let test = splits.test { display.log("held-out split: \(test.summary)") }
        for line in layout.summary(batchSize: configuration.batchSize) { display.log(line) }
        let trainer = try Pretrainer(configuration: configuration, backend: backend, data: splits, runFolder: folder,
                                     resume: resumed, workers: workers ?? ProcessInfo.processInfo.activeProcessorCount,
                                     report: display.handle)
        try writeConfig(configuration, to: folder)
        if let resumed {
            display.log("resuming from \(resumed.source) at epoch \(resumed.position.epoch + 1), "
                + "batch \(resumed.position.batch + 1), step \(resumed.position.step)")
        }
        let interrupt = InterruptFlag()
        let summary = try trainer.run(shouldStop: { interrupt.isSet })
        display.finish()
        if summary.completed {
            let knn = summary.knnTop1.sorted { $0.key < $1.key }
                .map { String(format: "epoch %d %.2f%%", $0.key, 100 * $0.value) }.joined(separator: ", ")
            display.log(String(format: "done in %.0f s (%.1f img/s), final loss %.4f", summary.seconds,
                               summary.imagesPerSecond, summary.lastLoss) + (knn.isEmpty ? "" : "; kNN top-1: \(knn)"))
        } else {
            display.log("stopped at epoch \(summary.position.epoch + 1), batch \(summary.position.batch); "
                + "checkpoint \(summary.lastCheckpoint ?? "-"); continue with --resume auto --output \(output)")
        }
    }

    func loadResume(_ spec: String, folder: URL) throws -> TrainingCheckpoint.Contents {
        guard spec == "auto" else { return try TrainingCheckpoint.read(URL(fileURLWithPath: spec)) }
        let (contents, warnings) = try TrainingCheckpoint.newestReadable(in: folder)
        for warning in warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
        return contents
    }

    func writeConfig(_ configuration: PretrainConfiguration, to folder: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(configuration).write(to: folder.appendingPathComponent("config.json"), options: .atomic)
    }
}

/// Set by the first Ctrl-C (the trainer then checkpoints and stops); a second one exits at once.
final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    private var source: DispatchSourceSignal?

    init() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [unowned self] in
            lock.lock()
            let again = set
            set = true
            lock.unlock()
            if again { exit(130) }
            FileHandle.standardError.write(Data(("\ninterrupted: finishing this iteration and writing a checkpoint "
                + "(Ctrl-C again to quit without one)\n").utf8))
        }
        source.resume()
        self.source = source
    }

    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return set
    }
}
