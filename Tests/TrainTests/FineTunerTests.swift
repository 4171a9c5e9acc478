import Augment
import Datasets
import Foundation
import Model
import Tensors
import Testing
import TestSupport
@testable import Train

enum FineTuneFixture {
    static func configuration(trunk: URL) -> FineTuneConfiguration {
        var c = FineTuneConfiguration()
        c.pretrained = trunk.path
        c.batchSize = 8          // 32 images: 4 iterations per epoch
        c.epochs = 2
        c.warmupEpochs = 0.5
        c.lr = 1e-3
        c.dropPath = 0.2
        c.seed = 9
        return c
    }

    static func tuner(_ configuration: FineTuneConfiguration, folder: URL, data: DatasetSplits = TinyRun.data(),
                      resume: FineTuneCheckpoint.Contents? = nil, log: ClassifierEventLog = ClassifierEventLog()) throws -> FineTuner {
        try FineTuner(configuration: configuration, backend: HostBackend(), data: data, runFolder: folder, resume: resume,
                      workers: 2, report: log.append)
    }
}

@Suite struct FineTunerTests {
    @Test func warmupThenCosinePerIterationAndLinearDropPathRates() throws {
        let folder = try TinyRun.folder("ft-schedule")
        defer { try? FileManager.default.removeItem(at: folder) }
        let configuration = FineTuneFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        let log = ClassifierEventLog()
        let summary = try FineTuneFixture.tuner(configuration, folder: folder.appendingPathComponent("run"), log: log).run()
        #expect(summary.completed && summary.position == TrainingPosition(epoch: 2, batch: 0, step: 8))
        let peak = 1e-3 * 8 / 512
        let rates = log.iterations.map(\.learningRate)
        // e = 0, 0.25 in the warmup (from 1e-6), then the cosine from e = 0.5 to 2 ending at min_lr 1e-5.
        #expect(abs(rates[0] - 1e-6) < 1e-15 && abs(rates[1] - (1e-6 + (peak - 1e-6) * 0.5)) < 1e-15)
        #expect(abs(rates[2] - peak) < 1e-15)
        #expect(abs(rates[7] - (1e-5 + (peak - 1e-5) * 0.5 * (1 + cos(Double.pi * 1.25 / 1.5)))) < 1e-15)
        #expect(zip(configuration.dropPathRates(depth: 4), [0, 0.2 / 3, 0.4 / 3, 0.2]).allSatisfy { abs($0 - $1) < 1e-12 })
        #expect(configuration.dropPathRates(depth: 4).count == 4 && configuration.dropPathRates(depth: 1) == [0])
        #expect(log.epochs.count == 2 && log.epochs.allSatisfy { $0.top5 >= $0.top1 })
        // The checkpoint is a ViT with a head under timm's names.
        let saved = try PretrainedViT(file: SafetensorsFile(contentsOf: folder.appendingPathComponent("run/checkpoint.safetensors")))
        #expect(saved.origin == .classifier && saved.head?.classes == 4)
    }

    /// Stopping mid-epoch and resuming gives the same weights, AdamW state and metrics bit for bit:
    /// the data, mixup/cutmix draws and drop-path masks are functions of (seed, epoch, batch).
    @Test func resumeIsBitIdentical() throws {
        let folder = try TinyRun.folder("ft-resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        let configuration = FineTuneFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        let whole = try FineTuneFixture.tuner(configuration, folder: folder.appendingPathComponent("straight"))
        let wholeSummary = try whole.run()
        let split = folder.appendingPathComponent("split")
        let first = try FineTuneFixture.tuner(configuration, folder: split)
        let stopped = try first.run(shouldStop: { first.position.step == 5 })
        #expect(stopped.position == TrainingPosition(epoch: 1, batch: 1, step: 5))
        let contents = try FineTuneCheckpoint.read(split.appendingPathComponent(FineTuneCheckpoint.lastName))
        let resumed = try FineTuneFixture.tuner(FineTuneConfiguration(), folder: split, resume: contents)
        #expect(resumed.configuration == configuration)
        let resumedSummary = try resumed.run()
        #expect(try resumed.backend.download(resumed.trunk.parameterTensor) == whole.backend.download(whole.trunk.parameterTensor))
        #expect(try resumed.head.values().weight == whole.head.values().weight)
        for (a, b) in zip(resumed.optimizers, whole.optimizers) {
            #expect(try a.optimizer.stateValues(on: resumed.backend).map(\.values) == b.optimizer.stateValues(on: whole.backend).map(\.values))
        }
        #expect(resumedSummary.lastTop1 == wholeSummary.lastTop1)
    }

    @Test func mixupDrawsAndTargets() {
        let mixup = Mixup(mixupAlpha: 0.8, cutmixAlpha: 1, switchProbability: 0.5, smoothing: 0.1, classes: 4)
        var generator = SplitMix64(seed: 3)
        var kinds = (mixup: 0, cutmix: 0)
        for _ in 0..<400 {
            switch mixup.draw(imageSize: 8, using: &generator) {
            case .mixup(let lambda): kinds.mixup += 1; #expect((0...1).contains(lambda))
            case .cutmix(let lambda, let top, let bottom, let left, let right):
                kinds.cutmix += 1
                // λ is corrected to the pasted box's true area.
                #expect(lambda == 1 - Double((bottom - top) * (right - left)) / 64)
                #expect(0 <= top && top <= bottom && bottom <= 8 && 0 <= left && left <= right && right <= 8)
            case .none: Issue.record("mixup_prob 1 always mixes")
            }
        }
        #expect(kinds.mixup > 150 && kinds.cutmix > 150)
        // Beta(0.8, 0.8) has mean 1/2 and variance 1/(4·2.6) ≈ 0.096.
        var lambdas: [Double] = []
        for _ in 0..<4000 { lambdas.append(Mixup.beta(0.8, using: &generator)) }
        let mean = lambdas.reduce(0, +) / 4000
        let variance = lambdas.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 4000
        #expect(abs(mean - 0.5) < 0.02 && abs(variance - 1 / 10.4) < 0.01, "mean \(mean), variance \(variance)")
        // Targets: smoothed one-hot rows mixed with the flipped batch's; each row sums to 1.
        var images = [Float](repeating: 1, count: 2 * 3 * 4 * 4) + []
        let targets = Mixup(mixupAlpha: 1, cutmixAlpha: 0, switchProbability: 0, smoothing: 0.2, classes: 4)
            .apply(.mixup(lambda: 0.75), images: &images, labels: [1, 3], imageSize: 4)
        expectClose(targets, [0.05, 0.65, 0.05, 0.25, 0.05, 0.25, 0.05, 0.65], relative: 1e-6, absolute: 1e-7, "targets")
    }

    @Test func badInputIsAClearErrorBeforeTraining() throws {
        let folder = try TinyRun.folder("ft-bad")
        defer { try? FileManager.default.removeItem(at: folder) }
        let good = FineTuneFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        func invalid(_ fragment: String, _ change: (inout FineTuneConfiguration) -> Void) {
            var c = good
            change(&c)
            expectError([fragment]) { try c.validate() }
        }
        invalid("--mixup is a Beta distribution's α and must be ≥ 0") { $0.mixup = -0.1 }
        invalid("--cutmix is a Beta distribution's α and must be ≥ 0") { $0.cutmix = -1 }
        invalid("--drop-path must lie in [0, 1)") { $0.dropPath = 1 }
        invalid("-b/--batch-size must be at least 2") { $0.batchSize = 1 }
        invalid("--smoothing must lie in [0, 1)") { $0.smoothing = 1 }
        invalid("--warmup-epochs must lie in 0..<epochs") { $0.warmupEpochs = 2 }
        invalid("pass --pretrained FILE") { $0.pretrained = nil }
        let tiny = TinyDataset(count: 32, seed: 1)
        let unlabeled = DatasetSplits(train: Relabeled(base: tiny, classNames: []), test: TinyDataset(count: 12, seed: 2), name: "bare")
        expectError(["bare has no labels"]) { _ = try FineTuneFixture.tuner(good, folder: folder, data: unlabeled) }
        var short = good
        short.epochs = 1
        _ = try FineTuneFixture.tuner(short, folder: folder.appendingPathComponent("run")).run()
        let contents = try FineTuneCheckpoint.read(folder.appendingPathComponent("run/checkpoint.safetensors"))
        let pairs = DatasetSplits(train: Relabeled(base: tiny, classNames: ["x", "y"]),
                                  test: Relabeled(base: TinyDataset(count: 12, seed: 2), classNames: ["x", "y"]), name: "pairs")
        expectError(["a head of 4 classes", "pairs has 2"]) {
            _ = try FineTuneFixture.tuner(good, folder: folder.appendingPathComponent("run"), data: pairs, resume: contents)
        }
        expectError(["not a mocov3-cl finetune checkpoint"]) {
            _ = try FineTuneCheckpoint.read(folder.appendingPathComponent("trunk.safetensors"))
        }
    }
}

/// Both classifier runs on PoCL: the loops, the head, drop path, the soft-target loss and the
/// optimizers on the OpenCL device, matching the host run's losses.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason)) struct ClassifierRunsOnOpenCLTests {
    func compare(_ host: ClassifierEventLog, _ opencl: ClassifierEventLog) {
        #expect(host.iterations.count == opencl.iterations.count && !host.iterations.isEmpty)
        for (a, b) in zip(opencl.iterations, host.iterations) {
            #expect(abs(a.loss - b.loss) <= 1e-3 * abs(b.loss) + 1e-5, "loss \(a.loss) vs \(b.loss) at step \(b.step)")
        }
    }

    @Test func fineTuningOnOpenCLMatchesTheHost() throws {
        let folder = try TinyRun.folder("ft-opencl")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = FineTuneFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        configuration.epochs = 1
        let (hostLog, clLog) = (ClassifierEventLog(), ClassifierEventLog())
        _ = try FineTuneFixture.tuner(configuration, folder: folder.appendingPathComponent("host"), log: hostLog).run()
        _ = try FineTuner(configuration: configuration, backend: TestDevices.backend(), data: TinyRun.data(),
                          runFolder: folder.appendingPathComponent("cl"), workers: 2, report: clLog.append).run()
        compare(hostLog, clLog)
    }

    @Test func theProbeWithBNHeadOnOpenCLMatchesTheHost() throws {
        let folder = try TinyRun.folder("probe-opencl")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = ProbeFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        configuration.epochs = 2
        configuration.bnHead = true
        configuration.batchSize = 5
        let (hostLog, clLog) = (ClassifierEventLog(), ClassifierEventLog())
        _ = try ProbeFixture.probe(configuration, folder: folder.appendingPathComponent("host"), log: hostLog).run()
        _ = try LinearProbe(configuration: configuration, backend: TestDevices.backend(), data: TinyRun.data(),
                            runFolder: folder.appendingPathComponent("cl"), workers: 2, report: clLog.append).run()
        compare(hostLog, clLog)
        #expect(hostLog.epochs.map(\.top1) == clLog.epochs.map(\.top1))
    }
}
