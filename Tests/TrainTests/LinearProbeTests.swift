import Datasets
import Foundation
import Model
import Tensors
import Testing
import TestSupport
@testable import Train

/// A dataset seen with other class names (labels taken modulo their count), or unlabeled with none.
struct Relabeled: ImageDataset {
    let base: TinyDataset
    let classNames: [String]
    var count: Int { base.count }
    func label(at index: Int) -> Int? { classNames.isEmpty ? nil : base.labels[index] % classNames.count }
    func image(at index: Int) throws -> Image { try base.image(at: index) }
    var summary: String { "relabeled tiny" }
}

/// Collects a classifier run's events.
final class ClassifierEventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [ClassifierEvent] = []
    func append(_ event: ClassifierEvent) { lock.lock(); events.append(event); lock.unlock() }
    var all: [ClassifierEvent] { lock.lock(); defer { lock.unlock() }; return events }
    var messages: [String] { all.compactMap { if case .message(let text) = $0 { return text } else { return nil } } }
    var iterations: [ClassifierIteration] { all.compactMap { if case .iteration(let m) = $0 { return m } else { return nil } } }
    var epochs: [ClassifierEpoch] { all.compactMap { if case .epoch(let e) = $0 { return e } else { return nil } } }
}

enum ProbeFixture {
    /// The tiny pre-training run's ViT (8×8, patch 4, 16 wide, 1 block, 2 heads) at its init, as a
    /// timm-named file with its configuration in the metadata.
    static func trunkFile(in folder: URL) throws -> URL {
        let config = try TinyRun.configuration.modelConfig().vit
        let layout = try ViTLayout(config)
        let values = try layout.initialValues(seed: 3)
        var writer = SafetensorsWriter(metadata: Checkpoint.metadata(for: config))
        for entry in layout.table.entries {
            try writer.add(entry.name, shape: entry.shape, floats: Array(values.parameters[entry.offset..<(entry.offset + entry.count)]))
        }
        let url = folder.appendingPathComponent("trunk.safetensors")
        try writer.write(to: url)
        return url
    }

    static func configuration(trunk: URL) -> LinearProbeConfiguration {
        var c = LinearProbeConfiguration()
        c.pretrained = trunk.path
        c.batchSize = 6          // 32 images: five batches of 6 and a last one of 2
        c.epochs = 3
        c.lr = 2
        c.seed = 5
        return c
    }

    static func probe(_ configuration: LinearProbeConfiguration, folder: URL, data: DatasetSplits = TinyRun.data(),
                      resume: LinearProbeCheckpoint.Contents? = nil, log: ClassifierEventLog = ClassifierEventLog()) throws -> LinearProbe {
        try LinearProbe(configuration: configuration, backend: HostBackend(), data: data, runFolder: folder, resume: resume,
                        workers: 2, report: log.append)
    }
}

@Suite struct LinearProbeTests {
    @Test func lrIsCosinePerEpochAndTheTrunkStaysFrozen() throws {
        let folder = try TinyRun.folder("probe-schedule")
        defer { try? FileManager.default.removeItem(at: folder) }
        let configuration = ProbeFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        let log = ClassifierEventLog()
        let probe = try ProbeFixture.probe(configuration, folder: folder, log: log)
        let summary = try probe.run()
        #expect(summary.completed && summary.position == TrainingPosition(epoch: 3, batch: 0, step: 18))
        let iterations = log.iterations
        #expect(iterations.count == 18)
        #expect(iterations.map(\.batch) == Array(repeating: Array(0..<6), count: 3).flatMap { $0 })
        let peak = 2.0 * 6 / 256
        for m in iterations {
            #expect(m.learningRate == peak * 0.5 * (1 + cos(Double.pi * Double(m.epoch) / 3)), "epoch \(m.epoch)")
        }
        #expect(iterations.first?.learningRate == peak)   // no warmup
        #expect(probe.frozenTrunkChecked)
        #expect(log.messages.contains { $0.contains("sanity check passed") })
        let trunk = try #require(probe.trunk)
        #expect(try probe.backend.download(trunk.parameterTensor) == trunk.expected.parameters)
        // The checkpoint holds the trunk under timm's names and the trained head; it loads as a ViT with a head.
        let saved = try PretrainedViT(file: SafetensorsFile(contentsOf: folder.appendingPathComponent("checkpoint.safetensors")))
        #expect(saved.origin == .classifier && saved.parameters == trunk.expected.parameters)
        #expect(try saved.head?.weight == probe.head.values().weight)
        // metrics.jsonl: one epoch line per epoch with top-1 and top-5.
        let lines = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").filter { $0.contains("\"type\":\"epoch\"") }
        #expect(lines.count == 3 && lines.allSatisfy { $0.contains("\"top1\":") && $0.contains("\"top5\":") })
        #expect(log.epochs.map(\.epoch) == [1, 2, 3])
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model_best.safetensors").path))
    }

    @Test func theFrozenTrunkCheckCatchesAnyChange() throws {
        let folder = try TinyRun.folder("probe-frozen")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = ProbeFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        configuration.epochs = 1
        let probe = try ProbeFixture.probe(configuration, folder: folder)
        let trunk = try #require(probe.trunk)
        // Flip one bit of one element of one block tensor, as a stray write would.
        let entry = try #require(trunk.layout.table["blocks.0.mlp.fc2.weight"])
        var values = trunk.expected.parameters
        values[entry.offset + 3] = Float(bitPattern: values[entry.offset + 3].bitPattern ^ 1)
        try probe.backend.upload(values, to: trunk.parameterTensor)
        expectError(["the frozen trunk changed", "blocks.0.mlp.fc2.weight"]) { _ = try probe.run() }
    }

    /// Stopping mid-epoch and resuming gives the same head, momentum, BN statistics and metrics,
    /// bit for bit, as the uninterrupted run: the reference protocol (augmented views) with the BN head.
    @Test func resumeIsBitIdentical() throws {
        let folder = try TinyRun.folder("probe-resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = ProbeFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        configuration.bnHead = true
        configuration.batchSize = 5    // 32 = 6·5 + 2: the last batch can be normalised
        let straight = folder.appendingPathComponent("straight")
        let whole = try ProbeFixture.probe(configuration, folder: straight)
        let wholeSummary = try whole.run()

        let split = folder.appendingPathComponent("split")
        let first = try ProbeFixture.probe(configuration, folder: split)
        let stopped = try first.run(shouldStop: { first.position.step == 10 })
        #expect(!stopped.completed && stopped.position == TrainingPosition(epoch: 1, batch: 3, step: 10))
        let contents = try LinearProbeCheckpoint.read(split.appendingPathComponent(LinearProbeCheckpoint.lastName))
        #expect(contents.position == stopped.position)
        let resumed = try ProbeFixture.probe(LinearProbeConfiguration(), folder: split, resume: contents)
        #expect(resumed.configuration == configuration)
        let resumedSummary = try resumed.run()
        #expect(resumedSummary.completed)
        #expect(try resumed.head.values().weight == whole.head.values().weight)
        #expect(try resumed.head.values().bias == whole.head.values().bias)
        #expect(try resumed.head.normalizationValues()! == whole.head.normalizationValues()!)
        #expect(try resumed.backend.download(resumed.optimizer.momentumBuffer) == whole.backend.download(whole.optimizer.momentumBuffer))
        #expect(resumedSummary.lastTop1 == wholeSummary.lastTop1 && resumedSummary.bestTop1 == wholeSummary.bestTop1)
    }

    @Test func cachedFeaturesRawPixelsAndRandomInitRun() throws {
        let folder = try TinyRun.folder("probe-protocols")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trunk = try ProbeFixture.trunkFile(in: folder)
        var cached = ProbeFixture.configuration(trunk: trunk)
        cached.cachedFeatures = true
        cached.epochs = 20
        let log = ClassifierEventLog()
        let summary = try ProbeFixture.probe(cached, folder: folder.appendingPathComponent("cached"), log: log).run()
        #expect(log.messages.contains { $0.contains("cached the features of 32 train and 12 test images (16 wide)") })
        #expect(summary.completed)
        // Only the head trains on fixed features: the training loss falls.
        #expect(log.epochs.first!.trainLoss > log.epochs.last!.trainLoss)

        var raw = LinearProbeConfiguration()
        raw.features = .rawPixels
        raw.imageSize = 8
        raw.batchSize = 8
        raw.epochs = 10
        raw.lr = 5
        raw.cachedFeatures = true
        let rawProbe = try ProbeFixture.probe(raw, folder: folder.appendingPathComponent("raw"))
        #expect(rawProbe.trunk == nil && rawProbe.head.width == 3 * 8 * 8)
        #expect(try rawProbe.run().bestTop1 > 0.5)

        var random = ProbeFixture.configuration(trunk: trunk)
        random.features = .randomInit
        random.epochs = 1
        let randomProbe = try ProbeFixture.probe(random, folder: folder.appendingPathComponent("random"))
        let initial = try ViTLayout(TinyRun.configuration.modelConfig().vit).initialValues(seed: 5)
        #expect(randomProbe.trunk?.expected.parameters == initial.parameters)
        #expect(try randomProbe.run().completed)
    }

    @Test func topKCountsTiesByClassIndex() {
        // Row 0: label 2 is the largest → top-1. Row 1: label 0 ties with class 3 and comes first → top-1.
        // Row 2: label 3 ties with class 1 (lower index, counted above) and is below 0 → rank 3.
        let logits: [Float] = [0, 1, 5, 2,   4, 1, 0, 4,   9, 3, 1, 3]
        #expect(TopK.hits(logits: logits, labels: [2, 0, 3], classes: 4, k: 2) == (top1: 2, topK: 2))
        #expect(TopK.hits(logits: logits, labels: [2, 0, 3], classes: 4, k: 3) == (top1: 2, topK: 3))
        #expect(!TopK.contains([1, .nan, 0], label: 1, k: 3))
    }

    @Test func badInputIsAClearErrorBeforeTraining() throws {
        let folder = try TinyRun.folder("probe-bad")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trunk = try ProbeFixture.trunkFile(in: folder)
        let good = ProbeFixture.configuration(trunk: trunk)
        let tiny = TinyDataset(count: 32, seed: 1)
        let unlabeled = DatasetSplits(train: Relabeled(base: tiny, classNames: []), test: TinyDataset(count: 12, seed: 2), name: "bare")
        expectError(["bare has no labels"]) { _ = try ProbeFixture.probe(good, folder: folder, data: unlabeled) }
        let noTest = DatasetSplits(train: tiny, test: nil, name: "trainonly")
        expectError(["trainonly has no labeled held-out split"]) { _ = try ProbeFixture.probe(good, folder: folder, data: noTest) }

        // Resume on data with another class count.
        var short = good
        short.epochs = 1
        _ = try ProbeFixture.probe(short, folder: folder.appendingPathComponent("run")).run()
        let contents = try LinearProbeCheckpoint.read(folder.appendingPathComponent("run/checkpoint.safetensors"))
        #expect(contents.classes == 4)
        let twoClasses = DatasetSplits(train: Relabeled(base: tiny, classNames: ["x", "y"]),
                                       test: Relabeled(base: TinyDataset(count: 12, seed: 2), classNames: ["x", "y"]), name: "pairs")
        expectError(["a head of 4 classes", "pairs has 2"]) {
            _ = try ProbeFixture.probe(good, folder: folder.appendingPathComponent("run"), data: twoClasses, resume: contents)
        }

        var bn = good
        bn.bnHead = true        // 32 = 5·6 + 2 is fine; 31 images would leave a batch of 1
        let odd = DatasetSplits(train: TinyDataset(count: 31, seed: 1), test: TinyDataset(count: 12, seed: 2), name: "odd")
        expectError(["last batch of 1", "--bn-head"]) { _ = try ProbeFixture.probe(bn, folder: folder, data: odd) }

        func invalid(_ fragment: String, _ change: (inout LinearProbeConfiguration) -> Void) {
            var c = good
            change(&c)
            expectError([fragment]) { try c.validate() }
        }
        invalid("--lr must be a positive number") { $0.lr = 0 }
        invalid("--epochs must be at least 1") { $0.epochs = 0 }
        invalid("-b/--batch-size ≥ 2") { $0.bnHead = true; $0.batchSize = 1 }
        invalid("pass --pretrained FILE") { $0.pretrained = nil }
        invalid("drop --pretrained") { $0.features = .rawPixels }
        invalid("--momentum must lie in [0, 1)") { $0.momentum = 1 }
        invalid("--heads must be at least 1") { $0.heads = 0 }
        expectError(["not a mocov3-cl lincls checkpoint"]) { _ = try LinearProbeCheckpoint.read(trunk) }
    }
}
