import ArgumentParser
import Collective
import Datasets
import Dispatch
import Foundation
import Model
import Tensors
import Train

/// `mocov3-cl pretrain`: MoCo v3 pre-training with the reference's `main_moco.py` flags.
/// Without flags it trains the default run (a 4-block ViT on Fashion-MNIST, about 15 minutes on
/// two cores with `--device host`).
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pre-train a ViT with MoCo v3, with the flags of the reference's main_moco.py.",
        discussion: """
        With no flags this trains the default run (README, "The default run"). The run folder \
        (--output) receives config.json, metrics.jsonl and a checkpoint after every epoch. \
        Ctrl-C writes a checkpoint of the iteration reached, and --resume auto continues from the newest one. \
        Every value below that is not given keeps the default run's value, shown in brackets.
        """)

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "The training data: fashion-mnist [default], an image folder (root/train/<class>/…, with an optional root/val), or a CIFAR binary folder.")
    var data: String?
    @Option(help: "The run folder for the configuration, the metrics and the checkpoints.") var output = "runs/pretrain"
    @Option(help: "Continue from a checkpoint file, or from the run folder's newest one with 'auto'.") var resume: String?

    @Option(name: [.customShort("a"), .long], help: "The ViT preset: vit_tiny, vit_small, vit_base, vit_large or vit_huge [vit_tiny narrowed to 128 wide, 4 blocks and 4 heads].")
    var arch: String?
    @Option(help: "The width C, overriding the preset's.") var embedDim: Int?
    @Option(help: "The number of blocks, overriding the preset's.") var depth: Int?
    @Option(help: "The number of attention heads, overriding the preset's.") var heads: Int?
    @Option(help: "The image side after the crop, in pixels [28].") var imageSize: Int?
    @Option(help: "The patch side, in pixels [7].") var patchSize: Int?
    @Option(help: "The output width of the projector and the predictor [256].") var mocoDim: Int?
    @Option(help: "The hidden width of the projector and the predictor [1024; the reference uses 4096].") var mocoMlpDim: Int?
    @Option(help: "The softmax temperature T of the contrastive loss [0.2].") var mocoT: Double?
    @Option(help: "The momentum-encoder EMA coefficient m at the start [0.99].") var mocoM: Double?
    @Flag(inversion: .prefixedNo, help: "Raise m from its start value to 1 along a half cosine [on].") var mocoMCos: Bool?
    @Flag(inversion: .prefixedNo, help: "Freeze the random patch projection, the paper's fix for instability (Sec. 4.1) [on].")
    var stopGradConv1: Bool?
    @Option(help: "The feature: cls, the class token [default], or avg, global average pooling (paper Sec. 6.1).")
    var pooling: String?
    @Flag(inversion: .prefixedNo, help: "Use BatchNorm instead of LayerNorm before each block's MLP, the paper's ViT-BN (Table 1) [off].")
    var vitBn: Bool?
    @Option(help: "The position embedding: sincos [default] or none (paper Table 6).") var posEmbed: String?

    @Option(name: [.customShort("b"), .long], help: "The total batch size [256].") var batchSize: Int?
    @Option(help: "The number of epochs [3].") var epochs: Int?
    @Option(help: "The number of warmup epochs, which may be fractional [0.5].") var warmupEpochs: Double?
    @Option(help: "The optimizer: adamw [default], lars, sgd (with momentum) or lamb.") var optimizer: String?
    @Option(name: [.customLong("lr"), .customLong("learning-rate")], help: "The base learning rate; the actual one is lr × batch / 256 [1.5e-3].")
    var lr: Double?
    @Option(name: [.customLong("weight-decay"), .customLong("wd")], help: "The weight decay [0.1].") var weightDecay: Double?
    @Option(help: "The smallest RandomResizedCrop scale [0.2].") var cropMin: Double?
    @Option(help: "A factor on the Gaussian blur's sigma range, 0.1-2.0 px as the reference blurs 224 px views [1].")
    var blurScale: Double?
    @Option(help: "The seed of the initialisation, the data order and the augmentations [0].") var seed: UInt64?

    @Option(help: "The length of the dense kNN monitor's memory bank [10% of the training set].") var knnBank: Int?
    @Option(help: "Run the dense kNN monitor every N iterations, or never with 0 [1].") var knnEvery: Int?
    @Option(help: "The k of the kNN classifier [200].") var knnK: Int?
    @Option(help: "The temperature of the kNN vote [0.07].") var knnT: Double?
    @Option(help: "Evaluate kNN on the held-out split every N epochs, or never with 0 [1].") var evalEvery: Int?
    @Option(help: "Warn when a layer's gradient norm exceeds this multiple of its recent median [10].")
    var spikeFactor: Double?

    @Option(name: [.customShort("p"), .long], help: "Print a log line every N iterations when not on a terminal.") var printFreq = 10
    @Option(help: "Also checkpoint mid-epoch: every N iterations (500), after a duration of training (90s, 10m, 2h), or never [10m].")
    var saveEvery = "10m"
    @Option(help: "How many mid-epoch checkpoints to keep, the newest; every epoch-end checkpoint is kept [2].")
    var keep = 2
    @Option(help: "Warn of a kNN dip when the monitor's 20-iteration mean falls this many points below its running maximum [5].")
    var dipPoints = 5.0
    @Option(help: "On a non-finite loss, gradient or weight: stop [default], or rollback to the last in-memory snapshot, skip the batch and go on.")
    var onNonfinite = "stop"
    @Option(help: "With rollback: multiply the lr of every later iteration by this at each rollback, in (0, 1] [1].")
    var rollbackLrScale = 1.0
    @Option(help: "With rollback: the most rollbacks within --rollback-window iterations; one more stops the run [3].")
    var rollbackLimit = 3
    @Option(help: "With rollback: the window of iterations that --rollback-limit counts in [1000].")
    var rollbackWindow = 1000
    @Option(help: "With rollback: keep an in-memory snapshot of the training state every N iterations and at each epoch start [25].")
    var snapshotEvery = 25
    @Option(name: [.customShort("j"), .long], help: "The number of data loader threads [all cores].") var workers: Int?
    @Option(help: "Data parallel inside this process on the host backend: this many ranks as threads, each with its own model replica, a slice of every batch and cores / ranks threads; 1 is one model on all cores [the host backend: one per core, as long as each rank keeps 32 images of the batch; other devices and mpirun: 1].")
    var ranks: Int?
    @Option(help: "Data parallel: the gradient all-reduce bucket in MiB, started as the backward finishes it; 0 reduces the whole gradient after the backward [4].")
    var bucketMib = Double(MoCoTrainingStep.defaultBucketBytes) / Double(1 << 20)

    var bucketBytes: Int {
        get throws {
            guard bucketMib.isFinite, bucketMib >= 0, bucketMib <= 4096 else {
                throw ValidationError("--bucket-mib \(bucketMib) is not a size between 0 and 4096 MiB (e.g. 4, or 0 for one all-reduce after the backward)")
            }
            return Int(bucketMib * Double(1 << 20))
        }
    }

    var nonFinitePolicy: NonFinitePolicy {
        get throws {
            try NonFinitePolicy(parsing: onNonfinite, learningRateScale: rollbackLrScale, limit: rollbackLimit,
                                window: rollbackWindow, snapshotEvery: snapshotEvery)
        }
    }

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
            do { set("--optimizer", try OptimizerKind(parsing: optimizer), \.optimizer) } catch {
                throw ValidationError("\(error)")
            }
        }
        set("--lr", lr, \.lr)
        set("--weight-decay", weightDecay, \.weightDecay)
        set("--crop-min", cropMin, \.cropMin)
        if let blurScale { set("--blur-scale", blurScale, \.blurScale) }
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
        do { _ = try SavePolicy(parsing: saveEvery, keep: keep) } catch { throw ValidationError("\(error)") }
        do { _ = try nonFinitePolicy } catch { throw ValidationError("\(error)") }
        guard dipPoints > 0, dipPoints < 100 else { throw ValidationError("--dip-points must lie in (0, 100), got \(dipPoints)") }
    }

    func run() throws {
        let group = try ProcessGroup.fromEnvironment()
        guard group.isDistributed else {
            let run = try prepare(rank: 0)
            let ranks = try InProcessRanks.resolve(self.ranks, batch: run.plan.configuration.batchSize, device: deviceOptions)
            guard ranks > 1 else { return try train(run, group: group) }
            let command = self
            _ = try ThreadGroup.run(ranks) { try command.train(run, group: $1, inProcess: true) }
            return
        }
        // A rank that fails ends the whole job at once, with its message, instead of leaving the
        // others waiting in a collective.
        do {
            if let ranks, ranks != 1 { throw ValidationError("--ranks \(ranks): under mpirun every process is one rank; leave --ranks out") }
            try train(try prepare(rank: group.rank), group: group)
        } catch {
            FileHandle.standardError.write(Data("\(group.messagePrefix)error: \(error)\n".utf8))
            group.abort(code: 1)
        }
    }

    /// What every rank starts from: the validated plan and the checkpoint it resumes, if any.
    struct PreparedRun {
        let folder: URL
        let plan: PretrainPlan
        let resumed: TrainingCheckpoint.Contents?
    }

    func prepare(rank: Int) throws -> PreparedRun {
        let folder = URL(fileURLWithPath: output)
        var resumed: TrainingCheckpoint.Contents?
        if let resume { resumed = try loadResume(resume, folder: folder) }
        let (configuration, changed) = try configuration(over: resumed?.configuration ?? .defaultRun)
        // The run's one validation: the configuration and its parameter layout, before any data or device.
        let plan: PretrainPlan
        if var stored = resumed {
            // A resumed run continues the stored run exactly; changing it midway is a new run.
            let conflicting = changed.filter { $0 != "--data" }
            guard conflicting.isEmpty else {
                throw ValidationError("\(stored.source) was trained with other values of "
                    + conflicting.joined(separator: ", ") + "; drop those flags to continue it, or start a new run with a new --output")
            }
            // Only --data may change (the same data, moved): later checkpoints record the new path.
            plan = stored.plan.withData(configuration.data)
            stored.plan = plan
            resumed = stored
        } else {
            guard rank != 0 || TrainingCheckpoint.candidates(in: folder).isEmpty else {
                throw ValidationError("\(folder.path) already holds checkpoints of a run; continue it with --resume auto, "
                    + "or choose another --output")
            }
            do { plan = try PretrainPlan(configuration) } catch { throw ValidationError("\(error)") }
        }
        return PreparedRun(folder: folder, plan: plan, resumed: resumed)
    }

    func train(_ run: PreparedRun, group: any Communicator, inProcess: Bool = false) throws {
        let (folder, plan, resumed) = (run.folder, run.plan, run.resumed)
        let configuration = plan.configuration
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let threads = group.isDistributed ? InProcessRanks.threadsPerRank(group.localSize) : cores
        if group.isDistributed { HostParallel.limitThreads(to: threads) }
        let backend = try group.isDistributed ? deviceOptions.makeBackend(localRank: group.localRank) : deviceOptions.makeBackend()
        let splits = try DatasetSource.open(configuration.data == "fashion-mnist" ? nil : configuration.data)
        let display = ProgressDisplay(printFrequency: printFreq, epochs: configuration.epochs, quiet: group.rank != 0)
        if group.isDistributed {
            display.log("data parallel: " + (inProcess ? "\(group.size) ranks as threads of this process (\(threads) thread\(threads == 1 ? "" : "s") each); "
                    : "\(group.size) processes (\(group.localSize) on this machine, \(threads) thread\(threads == 1 ? "" : "s") each); ")
                + "rank 0 on \(backend.name), \(configuration.batchSize / max(group.size, 1)) images per rank of every batch of "
                + "\(configuration.batchSize)")
        }
        display.log("mocov3-cl pretrain on \(backend.name): \(splits.name), \(splits.train.summary)")
        if let test = splits.test { display.log("held-out split: \(test.summary)") }
        for line in plan.layout.summary(batchSize: configuration.batchSize, ranks: group.size) { display.log(line) }
        let trainer = try Pretrainer(plan: plan, backend: backend, data: splits, runFolder: folder, resume: resumed,
                                     workers: workers ?? threads,
                                     savePolicy: try SavePolicy(parsing: saveEvery, keep: keep), dipDrop: dipPoints / 100,
                                     nonFinite: try nonFinitePolicy, communicator: group,
                                     bucketBytes: try bucketBytes, report: group.rank == 0 ? display.handle : Self.rankMessages)
        if group.rank == 0 { try writeJSON(plan.configuration, to: folder.appendingPathComponent("config.json")) }
        if let resumed {
            display.log("resuming from \(resumed.source) at epoch \(resumed.position.epoch + 1), "
                + "batch \(resumed.position.batch + 1), step \(resumed.position.step)")
        }
        // Ctrl-C from here on finishes the iteration and saves (one flag for all thread ranks).
        let interrupt = InterruptFlag.shared
        let summary = try trainer.run(shouldStop: { interrupt.isSet })
        display.finish()
        display.log("alarms: \(summary.alarms)")
        if group.isDistributed {
            let c = summary.collectives
            display.log(String(format: "collectives on rank 0: %.1f s of %.1f s (%.1f %%), %d calls, %.1f MB sent", c.seconds,
                               summary.seconds, 100 * c.seconds / max(summary.seconds, 1e-9), c.calls, Double(c.bytes) / 1e6)
                + String(format: "; waited %.2f s after the backwards for the gradient's %d bucket all-reduces",
                         summary.exposedReduction.seconds, summary.exposedReduction.buckets))
        }
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

    /// What a rank other than 0 shows: its own warnings (rank 0 shows the rest for everyone).
    static func rankMessages(_ event: TrainingEvent) {
        if case .rankMessage(let text) = event { FileHandle.standardError.write(Data("\(text)\n".utf8)) }
    }
}

/// Set by the first Ctrl-C (the trainer then checkpoints and stops); a second one exits at once.
final class InterruptFlag: @unchecked Sendable {
    /// Installed on first use: SIGINT is caught from then on.
    static let shared = InterruptFlag()
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
