import ArgumentParser
import Datasets
import Foundation
import Model
import Train

/// `mocov3-cl finetune`: end-to-end fine-tuning with DeiT's recipe (paper §6.3–6.4).
struct FineTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a whole ViT and a new head with DeiT's recipe (AdamW, mixup, cutmix, label smoothing, drop path).",
        discussion: """
        The trunk comes from --pretrained (a pretrain, lincls or finetune checkpoint, or a timm/DeiT ViT, then \
        --heads unless its metadata says), or from the initialisation with --random-init (the comparison that shows \
        what pre-training bought). AdamW at lr × batch / 512, a linear warmup then a cosine per iteration, no weight \
        decay on biases, norms and cls_token; RandomResizedCrop + flip, mixup or cutmix per batch, label \
        smoothing, stochastic depth rising linearly over the blocks. The transfer recipe of the paper \
        (SPEC A.9) is -b 128 --lr 3e-4 --weight-decay 0.1 --epochs 100. The run folder (--output) receives \
        config.json, metrics.jsonl, checkpoint.safetensors after every epoch and model_best.safetensors; Ctrl-C \
        writes a checkpoint, and --resume auto continues it.
        """)

    @Option(help: "The weights: a pretrain, lincls or finetune checkpoint, or a timm/DeiT ViT .safetensors file.")
    var pretrained: String?
    @Flag(help: "Start from the ViT's initialisation (seed --seed): the default run's architecture, or --pretrained's.")
    var randomInit = false
    @Option(help: "The attention heads of a --pretrained file whose metadata does not say.") var heads: Int?
    @Option(help: "The data: fashion-mnist [default], an image folder with train/ and val/ class folders, or a CIFAR binary folder.")
    var data: String?
    @Option(help: "The run folder.") var output = "runs/finetune"
    @Option(help: "Continue a finetune run from a checkpoint file, or from the run folder's checkpoint with 'auto'.")
    var resume: String?
    @OptionGroup var deviceOptions: DeviceOptions

    @Option(name: [.customShort("b"), .long], help: "The batch size [128].") var batchSize: Int?
    @Option(name: [.customLong("lr"), .customLong("learning-rate")], help: "The base learning rate; the actual one is lr × batch / 512 [5e-4].")
    var lr: Double?
    @Option(name: [.customLong("weight-decay"), .customLong("wd")], help: "The AdamW weight decay [0.05].") var weightDecay: Double?
    @Option(help: "The number of epochs [3: about 7 minutes for the default model on two cores].") var epochs: Int?
    @Option(help: "The warmup epochs, which may be fractional [1; DeiT's 5 is for 300 epochs].") var warmupEpochs: Double?
    @Option(help: "The lr the warmup starts from [1e-6].") var warmupLr: Double?
    @Option(help: "The lr the cosine ends at [1e-5].") var minLr: Double?
    @Option(help: "Label smoothing [0.1].") var smoothing: Double?
    @Option(help: "The stochastic depth rate of the last block; block i drops with rate·i/(depth−1) [0.1].") var dropPath: Double?
    @Option(help: "Mixup's α, 0 for off [0.8].") var mixup: Double?
    @Option(help: "Cutmix's α, 0 for off [1.0].") var cutmix: Double?
    @Option(help: "With both on, the probability of cutmix over mixup [0.5].") var mixupSwitchProb: Double?
    @Option(help: "The probability that a batch is mixed [1.0].") var mixupProb: Double?
    @Option(help: "The smallest RandomResizedCrop scale [0.08].") var cropMin: Double?
    @Option(help: "The seed of the head's init, the data order, the augmentations, mixup and drop path [0].") var seed: UInt64?
    @Option(name: [.customShort("p"), .long], help: "Print a log line every N iterations when not on a terminal.") var printFreq = 50
    @Option(name: [.customShort("j"), .long], help: "The number of data loader threads [all cores].") var workers: Int?

    /// The flags as (name, value given, key path), for building a configuration and for
    /// spotting changes on --resume.
    func apply(to base: FineTuneConfiguration) -> (FineTuneConfiguration, changed: [String]) {
        var c = base
        var changed: [String] = []
        func set<T: Equatable>(_ flag: String, _ value: T?, _ keyPath: WritableKeyPath<FineTuneConfiguration, T>) {
            guard let value else { return }
            if c[keyPath: keyPath] != value { changed.append(flag) }
            c[keyPath: keyPath] = value
        }
        set("--pretrained", pretrained.map { URL(fileURLWithPath: $0).path }, \.pretrained)
        set("--random-init", randomInit ? true : nil, \.randomInit)
        set("--heads", heads, \.heads)
        set("--batch-size", batchSize, \.batchSize)
        set("--lr", lr, \.lr)
        set("--weight-decay", weightDecay, \.weightDecay)
        set("--epochs", epochs, \.epochs)
        set("--warmup-epochs", warmupEpochs, \.warmupEpochs)
        set("--warmup-lr", warmupLr, \.warmupLR)
        set("--min-lr", minLr, \.minLR)
        set("--smoothing", smoothing, \.smoothing)
        set("--drop-path", dropPath, \.dropPath)
        set("--mixup", mixup, \.mixup)
        set("--cutmix", cutmix, \.cutmix)
        set("--mixup-switch-prob", mixupSwitchProb, \.mixupSwitchProbability)
        set("--mixup-prob", mixupProb, \.mixupProbability)
        set("--crop-min", cropMin, \.cropMin)
        set("--seed", seed, \.seed)
        if let data { c.data = data }
        return (c, changed)
    }

    func validate() throws {
        guard printFreq >= 1 else { throw ValidationError("--print-freq must be at least 1, got \(printFreq)") }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1, got \(workers)") }
        if resume == nil {
            do { try apply(to: FineTuneConfiguration()).0.validate() } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let folder = URL(fileURLWithPath: output)
        var resumed: FineTuneCheckpoint.Contents?
        var configuration = apply(to: FineTuneConfiguration()).0
        if let resume {
            let url = resume == "auto" ? folder.appendingPathComponent(FineTuneCheckpoint.lastName) : URL(fileURLWithPath: resume)
            if resume == "auto", !FileManager.default.fileExists(atPath: url.path) {
                throw ValidationError("--resume auto: \(folder.path) holds no \(FineTuneCheckpoint.lastName); start without --resume")
            }
            let contents = try FineTuneCheckpoint.read(url)
            let (merged, changed) = apply(to: contents.configuration)
            guard changed.isEmpty else {
                throw ValidationError("\(contents.source) was trained with other values of " + changed.joined(separator: ", ")
                    + "; drop those flags to continue it, or start a new run with a new --output")
            }
            configuration = merged
            resumed = contents
        } else if FileManager.default.fileExists(atPath: folder.appendingPathComponent(FineTuneCheckpoint.lastName).path) {
            throw ValidationError("\(folder.path) already holds a finetune run; continue it with --resume auto, or choose another --output")
        }
        // The weights first: a bad file is an error before the device and the data are opened.
        let trunk = resumed == nil
            ? try StartingTrunk(features: configuration.randomInit ? .randomInit : .pretrained,
                                pretrained: configuration.pretrained, heads: configuration.heads, seed: configuration.seed) : nil
        let backend = try deviceOptions.makeBackend()
        let splits = try DatasetSource.open(configuration.data == "fashion-mnist" ? nil : configuration.data)
        let display = ProgressDisplay(printFrequency: printFreq, epochs: configuration.epochs)
        display.log("mocov3-cl finetune on \(backend.name): \(splits.name), \(splits.train.summary)")
        if let test = splits.test { display.log("held-out split: \(test.summary)") }
        let tuner = try FineTuner(configuration: configuration, backend: backend, data: splits, runFolder: folder,
                                  resume: resumed, startingTrunk: trunk, workers: workers ?? ProcessInfo.processInfo.activeProcessorCount,
                                  report: display.handle)
        let c = tuner.configuration
        let vit = tuner.trunk.layout.config
        display.log("trunk: \(vit.depth) blocks, \(vit.embedDim) wide, \(vit.heads) heads, from \(tuner.source)")
        display.log(String(format: "AdamW lr %g × %d/512 = %g, wd %g, warmup %g epochs, cosine per iteration to %g, %d epochs; "
            + "smoothing %g, drop path %g, mixup %g, cutmix %g (switch %g)", c.lr, c.batchSize, c.peakLearningRate,
            c.weightDecay, c.warmupEpochs, c.minLR, c.epochs, c.smoothing, c.dropPath, c.mixup, c.cutmix,
            c.mixupSwitchProbability))
        try writeJSON(c, to: folder.appendingPathComponent("config.json"))
        if let resumed {
            display.log("resuming from \(resumed.source) at epoch \(resumed.position.epoch + 1), batch \(resumed.position.batch + 1)")
        }
        let interrupt = InterruptFlag()
        let summary = try tuner.run(shouldStop: { interrupt.isSet })
        display.finish()
        reportClassifierSummary(summary, command: "finetune", output: output, display: display)
    }
}
