import FileSystem
import ArgumentParser
import Datasets
import Foundation
import Model
import Train

/// `mocov3-cl lincls`: the linear probe of the reference's `main_lincls.py` (SPEC A.8) on a
/// frozen ViT from any weights file, or on a baseline (raw pixels, the ViT at initialisation).
struct LinCls: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lincls",
        abstract: "Train a linear classifier on a frozen ViT's features, as the reference's main_lincls.py.",
        discussion: """
        The trunk comes from --pretrained: a pretrain checkpoint (module.base_encoder.* minus the projector), a \
        lincls or finetune checkpoint, or a timm/DeiT ViT safetensors file (then --heads, unless its metadata \
        says). It stays frozen and in evaluation mode; a fresh Linear(C, classes) trains with SGD (momentum 0.9, \
        weight decay 0) at lr × batch / 256 with a cosine decay per epoch. Every epoch prints the held-out top-1 \
        and top-5. The run folder (--output) receives config.json, metrics.jsonl, checkpoint.safetensors after \
        every epoch and model_best.safetensors. Ctrl-C writes a checkpoint, and --resume auto continues it.
        """)

    @Option(help: "The weights: a pretrain, lincls or finetune checkpoint, or a timm/DeiT ViT .safetensors file.")
    var pretrained: String?
    @Flag(help: "Baseline: the same head and schedule on the normalised pixels (no ViT).") var rawPixels = false
    @Flag(help: "Baseline: the ViT at its initialisation (seed --seed): the default run's architecture, or --pretrained's.")
    var randomInit = false
    @Option(help: "The attention heads of a --pretrained file whose metadata does not say (timm's ViT-S: 6; MoCo v3's: 12).")
    var heads: Int?
    @Option(help: "The data: fashion-mnist [default], an image folder with train/ and val/ class folders, or a CIFAR binary folder.")
    var data: String?
    @Option(help: "The run folder.") var output = "runs/lincls"
    @Option(help: "Continue a lincls run from a checkpoint file, or from the run folder's checkpoint with 'auto'.")
    var resume: String?
    @OptionGroup var deviceOptions: DeviceOptions

    @Option(name: [.customShort("b"), .long], help: "The batch size [256; the reference's 1024 is for ImageNet's 1.28M images].")
    var batchSize: Int?
    @Option(name: [.customLong("lr"), .customLong("learning-rate")], help: "The base learning rate; the actual one is lr × batch / 256 [3, the reference's ViT value].")
    var lr: Double?
    @Option(help: "The number of epochs [90 with --cached-features, as the reference; 10 otherwise, about 7 minutes on two cores].")
    var epochs: Int?
    @Option(help: "The SGD momentum [0.9].") var momentum: Double?
    @Option(name: [.customLong("weight-decay"), .customLong("wd")], help: "The weight decay [0, the reference's].")
    var weightDecay: Double?
    @Flag(help: "The fast protocol: features of the evaluation transform computed once, no train augmentation (a deviation from the reference).")
    var cachedFeatures = false
    @Flag(help: "A parameter-free BatchNorm before the head (MAE's probe; eases the lr search).") var bnHead = false
    @Option(help: "The smallest RandomResizedCrop scale of the train augmentation [0.08].") var cropMin: Double?
    @Option(help: "The image side for --raw-pixels [28].") var imageSize: Int?
    @Option(help: "The seed of the head's init, the data order and the augmentations [0].") var seed: UInt64?
    @Option(name: [.customShort("p"), .long], help: "Print a log line every N iterations when not on a terminal.") var printFreq = 50
    @Option(name: [.customShort("j"), .long], help: "The number of data loader threads [all cores].") var workers: Int?

    func validate() throws {
        guard !(rawPixels && randomInit) else { throw ValidationError("choose one baseline: --raw-pixels or --random-init") }
        guard printFreq >= 1 else { throw ValidationError("--print-freq must be at least 1, got \(printFreq)") }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1, got \(workers)") }
        if resume == nil {
            do { try configuration().validate() } catch { throw ValidationError("\(error)") }
        }
    }

    /// The run the flags ask for.
    func configuration() -> LinearProbeConfiguration {
        var c = LinearProbeConfiguration()
        c.features = rawPixels ? .rawPixels : randomInit ? .randomInit : .pretrained
        c.pretrained = pretrained.map { URL(fileURLWithPath: $0).path }
        c.heads = heads
        c.data = data ?? c.data
        c.cachedFeatures = cachedFeatures
        c.bnHead = bnHead
        c.batchSize = batchSize ?? c.batchSize
        c.lr = lr ?? c.lr
        c.epochs = epochs ?? LinearProbeConfiguration.defaultEpochs(cachedFeatures: cachedFeatures)
        c.momentum = momentum ?? c.momentum
        c.weightDecay = weightDecay ?? c.weightDecay
        c.cropMin = cropMin ?? c.cropMin
        c.imageSize = imageSize ?? c.imageSize
        c.seed = seed ?? c.seed
        return c
    }

    /// The flags given that a resumed run would change: it continues the stored run exactly.
    func conflicts(with stored: LinearProbeConfiguration) -> [String] {
        var given: [String] = []
        func check<T: Equatable>(_ flag: String, _ value: T?, _ storedValue: T) {
            if let value, value != storedValue { given.append(flag) }
        }
        check("--batch-size", batchSize, stored.batchSize)
        check("--lr", lr, stored.lr)
        check("--epochs", epochs, stored.epochs)
        check("--momentum", momentum, stored.momentum)
        check("--weight-decay", weightDecay, stored.weightDecay)
        check("--crop-min", cropMin, stored.cropMin)
        check("--image-size", imageSize, stored.imageSize)
        check("--seed", seed, stored.seed)
        if cachedFeatures != stored.cachedFeatures { given.append(cachedFeatures ? "--cached-features" : "(no --cached-features)") }
        if bnHead != stored.bnHead { given.append(bnHead ? "--bn-head" : "(no --bn-head)") }
        if rawPixels || randomInit || pretrained != nil {
            let features: LinearProbeConfiguration.Features = rawPixels ? .rawPixels : randomInit ? .randomInit : .pretrained
            if features != stored.features || (pretrained.map { URL(fileURLWithPath: $0).path } != stored.pretrained && pretrained != nil) {
                given.append("--pretrained/--raw-pixels/--random-init")
            }
        }
        return given
    }

    func run() throws {
        let folder = URL(fileURLWithPath: output)
        var resumed: LinearProbeCheckpoint.Contents?
        var configuration = configuration()
        if let resume {
            let url = resume == "auto" ? folder.appendingPathComponent(LinearProbeCheckpoint.lastName) : URL(fileURLWithPath: resume)
            if resume == "auto", !FileManager.default.fileExists(atPath: url.path) {
                throw ValidationError("--resume auto: \(folder.path) holds no \(LinearProbeCheckpoint.lastName); start without --resume")
            }
            let contents = try LinearProbeCheckpoint.read(url)
            let conflicting = conflicts(with: contents.configuration)
            guard conflicting.isEmpty else {
                throw ValidationError("\(contents.source) was trained with other values of " + conflicting.joined(separator: ", ")
                    + "; drop those flags to continue it, or start a new run with a new --output")
            }
            configuration = contents.configuration
            if let data { configuration.data = data }
            resumed = contents
        } else if FileManager.default.fileExists(atPath: folder.appendingPathComponent(LinearProbeCheckpoint.lastName).path) {
            throw ValidationError("\(folder.path) already holds a lincls run; continue it with --resume auto, or choose another --output")
        }
        // The weights first: a bad file is an error before the device and the data are opened.
        let trunk = resumed == nil && configuration.features != .rawPixels
            ? try StartingTrunk(features: configuration.features, pretrained: configuration.pretrained,
                                heads: configuration.heads, seed: configuration.seed) : nil
        let backend = try deviceOptions.makeBackend()
        let splits = try DatasetSource.open(configuration.data == "fashion-mnist" ? nil : configuration.data)
        let display = ProgressDisplay(printFrequency: printFreq, epochs: configuration.epochs)
        display.log("mocov3-cl lincls on \(backend.name): \(splits.name), \(splits.train.summary)")
        if let test = splits.test { display.log("held-out split: \(test.summary)") }
        let probe = try LinearProbe(configuration: configuration, backend: backend, data: splits, runFolder: folder,
                                    resume: resumed, startingTrunk: trunk, workers: workers ?? ProcessInfo.processInfo.activeProcessorCount,
                                    report: display.handle)
        let config = probe.configuration
        display.log("features: " + (probe.trunk.map { "\($0.layout.config.embedDim)-wide class token of \($0.source)" }
            ?? "the normalised pixels (\(probe.head.width) values)") + (config.bnHead ? ", through a parameter-free BatchNorm" : ""))
        display.log(String(format: "head Linear(%d, %d), SGD momentum %g, wd %g, lr %g × %d/256 = %g, cosine per epoch, %d epochs, %@",
                           probe.head.width, probe.classes, config.momentum, config.weightDecay, config.lr, config.batchSize,
                           config.peakLearningRate, config.epochs,
                           config.cachedFeatures ? "cached features (no train augmentation)" : "RandomResizedCrop + flip"))
        try writeJSON(config, to: folder.appendingPathComponent("config.json"))
        if let resumed {
            display.log("resuming from \(resumed.source) at epoch \(resumed.position.epoch + 1), batch \(resumed.position.batch + 1)")
        }
        let interrupt = InterruptFlag()
        let summary = try probe.run(shouldStop: { interrupt.isSet })
        display.finish()
        reportClassifierSummary(summary, command: "lincls", output: output, display: display)
    }
}

/// The last lines of a `lincls` or `finetune` run: the accuracies and one JSON line, or where it
/// stopped and how to continue.
func reportClassifierSummary(_ summary: ClassifierSummary, command: String, output: String, display: ProgressDisplay) {
    if summary.completed, summary.lastTop1 == nil {
        display.log(String(format: "%@ already holds a finished run (%d epochs); its best top-1 was %.2f%% at epoch %d. "
            + "Start a new run with another --output", output, summary.position.epoch, 100 * summary.bestTop1, summary.bestEpoch))
    } else if summary.completed {
        display.log(String(format: "done in %.0f s: top-1 %.2f%%, top-5 %.2f%% after the last epoch; best top-1 %.2f%% at epoch %d",
                           summary.seconds, 100 * (summary.lastTop1 ?? .nan), 100 * (summary.lastTop5 ?? .nan),
                           100 * summary.bestTop1, summary.bestEpoch))
        print(String(format: "{\"%@_top1\":%.6f,\"%@_top5\":%.6f,\"best_top1\":%.6f,\"best_epoch\":%d,\"seconds\":%.1f}",
                     command, summary.lastTop1 ?? .nan, command, summary.lastTop5 ?? .nan, summary.bestTop1, summary.bestEpoch,
                     summary.seconds))
    } else {
        display.log("stopped at epoch \(summary.position.epoch + 1), batch \(summary.position.batch); "
            + "checkpoint \(summary.lastCheckpoint ?? "-"); continue with --resume auto --output \(output)")
    }
}

/// Writes `value` as pretty, key-sorted JSON, atomically; an error names the path and the cause.
func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try FileSystem.writeAtomically(try encoder.encode(value), to: url)
}
