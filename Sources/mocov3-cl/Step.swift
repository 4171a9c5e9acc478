import ArgumentParser
import CLBackend
import Collective
import Foundation
import Tensors
import Model
import Train

/// `mocov3-cl step`: one MoCo v3 training iteration, the same `MoCoTrainingStep` that `pretrain`
/// runs (EMA, forward of both views through both encoders, loss, backward, one optimizer update
/// from a fresh state), from a weights file or a seeded init; optionally writes everything the
/// step produced, or times `--repeat` steps.
struct Step: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run or time one MoCo v3 training step, and optionally write its outputs as safetensors.")

    @Option(help: "A weights file (.safetensors) with the model configuration in its __metadata__; without it, the model is initialised from --seed.")
    var weights: String?

    @Option(help: "The tensor-name prefix in --weights, such as 'init.' for the golden fixtures; without it, the prefix is detected.")
    var prefix: String?

    @Option(help: "A views file (.safetensors) holding x1 and x2, each B×3×H×W; without it, the views are random normal from --seed.")
    var views: String?

    @Option(help: "Write the loss, q1, q2, k1, k2, grad.<name> and the updated weights and buffers to this .safetensors file.")
    var output: String?

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "The optimizer of the step: adamw, lars, sgd or lamb, each from a fresh state.")
    var optimizer = "adamw"
    @Option(help: "The learning rate of the step.") var lr: Double = 1e-3
    @Option(help: "The weight decay (decoupled for AdamW).") var weightDecay: Double = 0.1
    @Option(help: "The momentum-encoder EMA coefficient m.") var mocoM: Double = 0.99
    @Option(help: "The softmax temperature T of the contrastive loss.") var mocoT: Double = 0.2

    @Option(help: "Time N steps after one untimed warm-up, and print one JSON line.")
    var `repeat`: Int?

    @Flag(help: "With --repeat on an OpenCL device: also print, to stderr, each kernel's device time per timed step, longest first.")
    var profile = false

    @Option(help: "Data parallel on the host backend as pretrain runs it: this many ranks as threads, each with its own model, a slice of the batch and cores / ranks threads [as pretrain: one per core while each keeps 32 images; 1 with --output or on other devices].")
    var ranks: Int?

    @Flag(help: "Print the configuration, the parameter counts and the memory plan, allocate nothing, and exit.")
    var dryRun = false

    @Option(name: [.customShort("a"), .long], help: "The ViT preset when there is no --weights: vit_tiny, vit_small, vit_base, vit_large or vit_huge.")
    var arch = "vit_tiny"
    @Option(help: "The width C, overriding the preset's (without --weights).") var embedDim: Int?
    @Option(help: "The number of blocks, overriding the preset's (without --weights).") var depth: Int?
    @Option(help: "The number of heads, overriding the preset's (without --weights).") var heads: Int?
    @Option(help: "The image side in pixels (without --weights).") var imageSize = 32
    @Option(help: "The patch side in pixels (without --weights).") var patchSize = 4
    @Option(help: "The output width of the projector and the predictor (without --weights).") var mocoDim = 256
    @Option(help: "The hidden width of the projector and the predictor (without --weights).") var mocoMlpDim = 4096
    @Option(name: [.customShort("b"), .long], help: "The images per view: 128, or the batch of --views.")
    var batchSize: Int?
    @Option(help: "The seed of the initial weights and the random views.") var seed: UInt64 = 0
    @Flag(help: "Freeze the base encoder's patch projection (without --weights).") var stopGradConv1 = false
    @Option(help: "The feature: cls, the class token, or avg, global average pooling (without --weights).") var pooling = "cls"
    @Flag(help: "Use BatchNorm before each block's MLP, the paper's ViT-BN (without --weights).") var vitBn = false
    @Option(help: "The position embedding: sincos or none (without --weights).") var posEmbed = "sincos"

    func validate() throws {
        if let batchSize, batchSize < 2 {
            throw ValidationError("--batch-size must be at least 2 (training-mode BatchNorm needs two samples), got \(batchSize)")
        }
        guard lr >= 0, lr.isFinite else { throw ValidationError("--lr must be a finite number ≥ 0, got \(lr)") }
        guard weightDecay >= 0, weightDecay.isFinite else {
            throw ValidationError("--weight-decay must be a finite number ≥ 0, got \(weightDecay)")
        }
        guard (0...1).contains(mocoM) else { throw ValidationError("--moco-m must lie in [0, 1], got \(mocoM)") }
        guard mocoT > 0, mocoT.isFinite else { throw ValidationError("--moco-t must be a positive number, got \(mocoT)") }
        if let count = self.repeat, count < 1 { throw ValidationError("--repeat must be at least 1, got \(count)") }
        if profile, self.repeat == nil { throw ValidationError("--profile times the --repeat steps; add --repeat N") }
        do { _ = try OptimizerKind(parsing: optimizer) } catch { throw ValidationError("\(error)") }
        if weights == nil {
            guard imageSize > 0, patchSize > 0 else {
                throw ValidationError("--image-size and --patch-size must be positive, got \(imageSize) and \(patchSize)")
            }
            guard imageSize % patchSize == 0 else {
                throw ValidationError("--patch-size \(patchSize) must divide --image-size \(imageSize); "
                    + "pick an image size that is a multiple of the patch size")
            }
            guard mocoDim > 0, mocoMlpDim > 0 else {
                throw ValidationError("--moco-dim and --moco-mlp-dim must be positive, got \(mocoDim) and \(mocoMlpDim)")
            }
            do { _ = try ViTConfig.named(arch) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let weightsFile = try weights.map { try SafetensorsFile(contentsOf: URL(fileURLWithPath: $0)) }
        let viewsFile = try views.map { try SafetensorsFile(contentsOf: URL(fileURLWithPath: $0)) }
        let config = try modelConfig(weightsFile)
        let layout = try MoCoParameters(config)

        let vit = config.vit
        var batch = batchSize ?? 128
        if let viewsFile {
            let shape = try viewsFile.entry(named: "x1").shape
            guard shape.count == 4, shape[1] == vit.channels, shape[2] == vit.imageSize, shape[3] == vit.imageSize else {
                throw ValidationError("\(viewsFile.source): x1 has shape \(shape); this model needs "
                    + "[B, \(vit.channels), \(vit.imageSize), \(vit.imageSize)]")
            }
            if let batchSize, batchSize != shape[0] {
                throw ValidationError("--batch-size \(batchSize) differs from the views' batch \(shape[0]); drop one")
            }
            batch = shape[0]
            guard batch >= 2 else { throw ValidationError("the views hold \(batch) image(s); BatchNorm needs at least 2") }
        }

        // An unknown device is an error even for a dry run (resolving the name allocates nothing).
        if dryRun {
            print("device: \(try deviceOptions.resolvedName())")
            for line in layout.summary(batchSize: batch) { print(line) }
            return
        }

        let initial = try weightsFile.map { try Checkpoint.initialValues(from: $0, layout: layout, prefix: prefix) }
            ?? layout.initialValues(seed: seed)
        let imageShape = [batch, vit.channels, vit.imageSize, vit.imageSize]
        let (x1Values, x2Values) = try viewsFile.map {
            (try $0.floats("x1", shape: imageShape), try $0.floats("x2", shape: imageShape))
        } ?? Checkpoint.randomViews(config: vit, batchSize: batch, seed: seed)
        // --output writes one model's step; the ranks of pretrain otherwise.
        if output != nil, let ranks, ranks > 1 {
            throw ValidationError("--output writes one model's step; drop --ranks \(ranks) or --output")
        }
        let ranks = output != nil ? 1 : try InProcessRanks.resolve(self.ranks, batch: batch, device: deviceOptions)
        let noKernels = ValidationError("--profile times OpenCL kernels; the host backend has none to time "
            + "(profile it with perf record instead), so pick an OpenCL --device")
        if profile, ranks > 1 { throw noKernels }   // in-process ranks run on the host only
        guard ranks > 1 else {
            let backend = try deviceOptions.makeBackend(profiling: profile)
            if profile, !(backend is CLBackend) { throw noKernels }
            let (model, timing) = try runSteps(layout: layout, initial: initial, views: (x1Values, x2Values), batch: batch,
                                               backend: backend, communicator: SingleProcess())
            report(timing, layout: layout, batch: batch, ranks: 1)
            if profile { reportKernels(timing) }
            if let output {
                var metadata = weightsFile?.metadata ?? [:]
                metadata.merge(Checkpoint.metadata(for: config)) { _, new in new }
                let writer = try Checkpoint.stepWriter(model: model, loss: timing.loss, metadata: metadata)
                try writer.write(to: URL(fileURLWithPath: output))
            }
            return
        }
        HostParallel.limitThreads(to: InProcessRanks.threadsPerRank(ranks))
        let (command, globalBatch) = (self, batch)
        let timings = try ThreadGroup.run(ranks) { _, communicator in
            try command.runSteps(
                layout: layout, initial: initial, views: (x1Values, x2Values), batch: globalBatch,
                backend: try command.deviceOptions.makeBackend(localRank: communicator.localRank), communicator: communicator).1
        }
        report(timings[0], layout: layout, batch: batch, ranks: ranks)
    }

    /// What a run of steps measured (the backend's name, the last loss, the timed steps' seconds).
    struct Timing: Sendable {
        var device: String
        var loss: Float
        var seconds: [Double]
        /// The process's CPU time (user + system, every thread) over the timed steps.
        var cpuSeconds = 0.0
        /// With --profile: device nanoseconds and launches per kernel label, summed over the timed steps.
        var kernels: [String: (nanoseconds: UInt64, launches: Int)] = [:]
    }

    /// The process's user + system CPU seconds so far (all threads) and its peak resident
    /// memory in MiB (Linux reports ru_maxrss in KiB).
    static func resourceUsage() -> (cpuSeconds: Double, peakResidentMiB: Double) {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime) + seconds(usage.ru_stime), Double(usage.ru_maxrss) / 1024)
    }

    /// This rank's model (its rows of the views) and optimizer, then the step once and, with
    /// --repeat, N timed steps more.
    func runSteps(layout: MoCoParameters, initial: (parameters: [Float], buffers: [Float]), views: ([Float], [Float]),
                  batch: Int, backend: any Backend, communicator: any Communicator) throws -> (MoCoModel, Timing) {
        let vit = layout.config.vit
        let local = batch / communicator.size
        let image = vit.channels * vit.imageSize * vit.imageSize
        let rows = (communicator.rank * local * image)..<((communicator.rank + 1) * local * image)
        let shape = [local, vit.channels, vit.imageSize, vit.imageSize]
        let model = try MoCoModel(parameters: layout, backend: backend, batchSize: local, initial: initial,
                                  communicator: communicator)
        let x1 = try backend.makeTensor(Array(views.0[rows]), shape: shape)
        let x2 = try backend.makeTensor(Array(views.1[rows]), shape: shape)

        // The iteration `pretrain` runs, with a fresh optimizer state and a fixed lr and m.
        let kind = try OptimizerKind(parsing: optimizer)
        let trainingStep = try MoCoTrainingStep(
            model: model, optimizer: kind.make(backend: backend, segments: model.trainableSegments, weightDecay: weightDecay))
        func step(_ number: Int) throws -> Float {
            let outcome = try trainingStep(x1: x1, x2: x2, learningRate: lr, momentum: mocoM, step: number)
            guard outcome.applied else {
                throw ValidationError("step \(number): the loss is \(outcome.loss) or a gradient is not finite; "
                    + "the update was skipped. Lower --lr or check the weights and views")
            }
            return outcome.loss
        }
        var timing = Timing(device: backend.name, loss: try step(1), seconds: [])
        if let count = self.repeat {
            // The ranks start together (each step's all-reduces keep them so).
            if communicator.isDistributed { var ready = [0.0]; try communicator.allReduceSum(&ready) }
            let profiler = profile ? backend as? CLBackend : nil
            _ = try profiler?.drainTimings()   // the warm-up's launches are not counted
            let cpu = Self.resourceUsage().cpuSeconds
            for number in 2...(count + 1) {
                let start = DispatchTime.now().uptimeNanoseconds
                timing.loss = try step(number)   // returns the loss on the host: the step is synchronized
                timing.seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                // Read after the clock stops; the step is synchronized, so every event has ended.
                for (label, nanoseconds) in try profiler?.drainTimings() ?? [] {
                    timing.kernels[label, default: (0, 0)].nanoseconds += nanoseconds
                    timing.kernels[label, default: (0, 0)].launches += 1
                }
            }
            timing.cpuSeconds = Self.resourceUsage().cpuSeconds - cpu
        }
        return (model, timing)
    }

    /// One JSON line with --repeat, else the loss.
    func report(_ timing: Timing, layout: MoCoParameters, batch: Int, ranks: Int) {
        guard !timing.seconds.isEmpty else {
            print("\(timing.device): loss \(timing.loss)")
            return
        }
        let median = timing.seconds.sorted()[timing.seconds.count / 2]   // odd N: the median; even: the upper one
        // As tools/bench_torch_step.py: an image is one sample of the batch (both views run).
        let (config, vit) = (layout.config, layout.config.vit)
        // FLOPs: the GEMMs and attention products of the step (MoCoParameters.trainingFLOPsPerImage).
        let flops = layout.trainingFLOPsPerImage
        let fields: [(String, String)] = [
            ("device", jsonString(timing.device)), ("arch", jsonString(archName(config))),
            ("batch_size", "\(batch)"), ("image_size", "\(vit.imageSize)"), ("patch_size", "\(vit.patchSize)"),
            ("ranks", "\(ranks)"), ("threads_per_rank", "\(ranks > 1 ? InProcessRanks.threadsPerRank(ranks) : HostParallel.chunkCount)"),
            ("openblas_core", jsonString(OpenBLASCore.detectedCore)),
            ("median_step_seconds", "\(median)"), ("images_per_second", "\(Double(batch) / median)"),
            ("gflop_per_image", String(format: "%.4f", flops / 1e9)),
            ("gflops", String(format: "%.2f", flops * Double(batch) / median / 1e9)),
            ("cpu_time_per_wall", String(format: "%.3f", timing.cpuSeconds / max(timing.seconds.reduce(0, +), 1e-9))),
            ("peak_rss_mib", String(format: "%.1f", Self.resourceUsage().peakResidentMiB)),
            ("loss", "\(timing.loss)"),
        ]
        print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
    }

    /// --profile's table on stderr: per kernel, the launches and device milliseconds per timed step
    /// and the share of the step's wall time, longest first, then the total against the wall.
    func reportKernels(_ timing: Timing) {
        let steps = Double(max(timing.seconds.count, 1))
        let wallMilliseconds = timing.seconds.reduce(0, +) / steps * 1e3
        let rows = timing.kernels.sorted { $0.value.nanoseconds > $1.value.nanoseconds }
        var lines = ["# kernel device time per step (\(timing.seconds.count) timed steps, "
                     + String(format: "%.1f ms wall each)", wallMilliseconds),
                     "kernel,launches_per_step,ms_per_step,percent_of_wall"]
        var total = 0.0
        for (label, value) in rows {
            let milliseconds = Double(value.nanoseconds) / 1e6 / steps
            total += milliseconds
            lines.append("\(label)," + String(format: "%.0f,%.3f,%.1f", Double(value.launches) / steps, milliseconds,
                                               100 * milliseconds / wallMilliseconds))
        }
        lines.append(String(format: "all kernels,%.0f,%.3f,%.1f", Double(rows.map(\.value.launches).reduce(0, +)) / steps,
                            total, 100 * total / wallMilliseconds))
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }

    /// The configuration from the weights' metadata, else from the flags.
    private func modelConfig(_ weightsFile: SafetensorsFile?) throws -> MoCoConfig {
        if let weightsFile { return try Checkpoint.config(from: weightsFile, temperature: mocoT) }
        var vit = try ViTConfig.named(arch)
        vit.imageSize = imageSize
        vit.patchSize = patchSize
        vit.stopGradConv1 = stopGradConv1
        if let embedDim { vit.embedDim = embedDim }
        if let depth { vit.depth = depth }
        if let heads { vit.heads = heads }
        do { try vit.setOptions(pooling: pooling, positionEmbedding: posEmbed, vitBN: vitBn) } catch {
            throw ValidationError("\(error)")
        }
        let config = MoCoConfig(vit: vit, mocoDim: mocoDim, mocoMLPDim: mocoMlpDim, temperature: mocoT)
        do { try config.validate() } catch { throw ValidationError("\(error)") }
        return config
    }

    /// The preset whose width, depth and heads match, else "custom".
    private func archName(_ config: MoCoConfig) -> String {
        ViTConfig.presets.first {
            $0.config.embedDim == config.vit.embedDim && $0.config.depth == config.vit.depth
                && $0.config.heads == config.vit.heads
        }?.name ?? "custom"
    }

    private func jsonString(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
