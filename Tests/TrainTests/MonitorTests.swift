import Foundation
import Tensors
import Model
import Testing
import TestSupport
@testable import Train

/// The backends the classifier tests run on: the host, and PoCL where an OpenCL device exists.
enum ClassifierDevice: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case host, openCL
    var testDescription: String { rawValue }
    func backend() throws -> (any Backend)? {
        switch self {
        case .host: return HostBackend()
        case .openCL: return TestDevices.hasOpenCL ? try TestDevices.backend() : nil
        }
    }
}

@Suite struct KNNClassifierTests {
    @Test(arguments: ClassifierDevice.allCases) func theWeightedVoteFollowsTheTemperature(_ device: ClassifierDevice) throws {
        guard let backend = try device.backend() else { return }
        // Bank (unit vectors in 2-D): two class-0 samples at 40° from the query, one class-1
        // sample at 10°. With k = 3 a cold vote (T small) follows the single closest sample, a
        // warm vote (T large) counts heads.
        func unit(_ degrees: Double) -> [Float] { [Float(cos(degrees * .pi / 180)), Float(sin(degrees * .pi / 180))] }
        let bank = unit(40) + unit(-40) + unit(10)
        let labels: [Int32] = [0, 0, 1]
        let query = unit(0)
        func predict(k: Int, temperature: Double) throws -> [Int32] {
            try KNNClassifier(k: k, temperature: temperature, classes: 2)
                .predict(queries: query, bank: bank, bankLabels: labels, width: 2, on: backend)
        }
        #expect(try predict(k: 3, temperature: 0.05) == [1])
        #expect(try predict(k: 3, temperature: 10) == [0])
        // k = 1: the nearest neighbour only.
        #expect(try predict(k: 1, temperature: 10) == [1])
    }

    @Test(arguments: ClassifierDevice.allCases) func unfilledSlotsAreIgnoredAndAccuracyCountsMatches(_ device: ClassifierDevice) throws {
        guard let backend = try device.backend() else { return }
        let bank: [Float] = [1, 0, 0, 1, 0.9, 0.1]
        let labels: [Int32] = [0, 1, -1]
        let queries = KNNClassifier.normalized([2, 0.1, 0.1, 3, 1, 0.2], width: 2)
        let classifier = KNNClassifier(k: 200, temperature: 0.07, classes: 2)
        #expect(try classifier.predict(queries: queries, bank: bank, bankLabels: labels, width: 2, on: backend) == [0, 1, 0])
        #expect(try classifier.accuracy(queries: queries, labels: [0, 1, 1], bank: bank, bankLabels: labels, width: 2,
                                        on: backend) == 2.0 / 3)
    }

    /// A bank larger than one tile (16384) and more queries than one block (1024) give the same
    /// votes as a brute-force Double reference.
    @Test(arguments: ClassifierDevice.allCases) func aTiledBankMatchesBruteForce(_ device: ClassifierDevice) throws {
        guard let backend = try device.backend() else { return }
        var generator = SplitMix64(seed: 11)
        let (width, bankCount, queryCount, classes) = (8, 20_000, 1030, 5)
        let bank = KNNClassifier.normalized(randomValues(bankCount * width, using: &generator), width: width)
        let labels = (0..<bankCount).map { _ in Int32.random(in: 0..<Int32(classes), using: &generator) }
        let queries = KNNClassifier.normalized(randomValues(queryCount * width, using: &generator), width: width)
        let classifier = KNNClassifier(k: 20, temperature: 0.07, classes: classes)
        let predicted = try classifier.predict(queries: queries, bank: bank, bankLabels: labels, width: width, on: backend)
        var agree = 0
        // The brute force on every 8th query (and the last, in the ragged second block).
        let checked = Array(stride(from: 0, to: queryCount, by: 8)) + [queryCount - 1]
        for q in checked {
            let similarities = (0..<bankCount).map { b in
                (0..<width).reduce(0.0) { $0 + Double(queries[q * width + $1]) * Double(bank[b * width + $1]) }
            }
            let nearest = similarities.indices.sorted { similarities[$0] > similarities[$1] }.prefix(20)
            var votes = [Double](repeating: 0, count: classes)
            for b in nearest { votes[Int(labels[b])] += exp(similarities[b] / 0.07) }
            if Int32(votes.indices.max { votes[$0] < votes[$1] }!) == predicted[q] { agree += 1 }
        }
        // Float vs Double similarities may swap a near-tie at the k-th place; never more than twice here.
        #expect(agree >= checked.count - 2, "\(agree) of \(checked.count) predictions agree")
    }

    /// On the tiny dataset each class brightens its own quadrant, so raw pixels separate the
    /// classes; misaligned labels or features would score near chance (0.25).
    @Test func rawPixelKNNSeparatesTheTinyClasses() throws {
        let data = TinyRun.data()
        let top1 = try KNNEvaluation(k: 5, temperature: 0.07, workers: 2)
            .rawPixelAccuracy(train: data.train, test: try #require(data.test), imageSize: 8, on: HostBackend()).top1
        #expect(top1 >= 0.9, "\(top1)")
    }

    /// The device copy follows the queue through enqueues that wrap around its end.
    @Test(arguments: ClassifierDevice.allCases) func theDeviceBankFollowsTheQueue(_ device: ClassifierDevice) throws {
        guard let backend = try device.backend() else { return }
        var bank = MemoryBank(length: 5, width: 2)
        let mirror = try DeviceMemoryBank(bank, backend: backend)
        var generator = SplitMix64(seed: 4)
        for step in 0..<4 {
            let start = bank.pointer
            let rows = randomValues(6, using: &generator)
            let written = bank.enqueue(rows, labels: [Int32(step), -1, Int32(step + 10)])   // the -1 row is skipped
            #expect(written == 2)
            try mirror.update(from: bank, writtenFrom: start, count: written)
            #expect(try backend.download(mirror.features) == bank.features, "step \(step)")
            var labels = [Int32](repeating: -2, count: 5)
            try labels.withUnsafeMutableBytes { try backend.download(mirror.labels, intoBytes: $0) }
            #expect(labels == bank.labels, "step \(step)")
        }
    }

    @Test func theMemoryBankIsAQueue() {
        var bank = MemoryBank(length: 3, width: 2)
        #expect(bank.filled == 0)
        bank.enqueue([3, 4, 0, 2], labels: [1, 2])
        #expect(bank.filled == 2 && bank.pointer == 2)
        #expect(bank.features[0...1] == [0.6, 0.8])                        // normalised
        bank.enqueue([1, 0, 0, 1], labels: [3, 4])                           // wraps: overwrites slot 0
        #expect(bank.labels == [4, 2, 3])
        #expect(bank.pointer == 1)
    }
}

@Suite struct GradientMonitorTests {
    @Test func layersAreGroupedInForwardOrder() throws {
        let layout = try MoCoParameters(TinyRun.configuration.modelConfig())
        let monitor = GradientMonitor(layout: layout, spikeFactor: 10)
        // stop-grad-conv1 is off in the tiny run, so the patch projection is monitored.
        #expect(monitor.layers.map(\.name) == ["patch_embed", "cls_token", "blocks.0", "norm", "head", "predictor"])
        #expect(GradientMonitor.layerName(of: "module.base_encoder.blocks.11.attn.qkv.weight") == "blocks.11")
        #expect(GradientMonitor.layerName(of: "module.predictor.3.weight") == "predictor")
    }

    @Test func aSpikeIsALayerFarAboveItsRecentMedian() throws {
        let layout = try MoCoParameters(TinyRun.configuration.modelConfig())
        let monitor = GradientMonitor(layout: layout, spikeFactor: 10)
        let quiet = [Double](repeating: 1, count: monitor.layers.count)
        for step in 0..<12 { #expect(monitor.record(quiet.map { $0 * (1 + 0.01 * Double(step)) }).isEmpty) }
        var spiking = quiet
        spiking[0] = 25
        let spikes = monitor.record(spiking)
        #expect(spikes.map(\.layer) == ["patch_embed"])
        #expect(spikes.first.map { $0.norm / $0.median > 20 } == true)
        #expect(monitor.record(quiet.map { $0 * 9 }).isEmpty)               // 9× is below the factor
    }

    @Test func normsComeFromTheGradientBuffer() throws {
        let layout = try MoCoParameters(TinyRun.configuration.modelConfig())
        let backend = HostBackend()
        let monitor = GradientMonitor(layout: layout, spikeFactor: 10)
        var values = [Float](repeating: 0, count: layout.trainableRegion.upperBound)
        let qkv = try #require(layout.table["module.base_encoder.blocks.0.attn.qkv.weight"])
        values[qkv.offset] = 3
        values[qkv.offset + 1] = 4
        let predictor = try #require(layout.table["module.predictor.0.weight"])
        values[predictor.offset + 2] = .infinity
        // The per-tensor squared norms as the training step computes them (one segment per trainable tensor).
        let segments = layout.segmentTable()
        let output = try backend.makeTensor(shape: [segments.count])
        try backend.squaredNorms(output: output, input: backend.makeTensor(values, shape: [values.count]), segments: segments)
        let squared = try backend.download(output)
        let norms = monitor.layerNorms(squared)
        let names = monitor.layers.map(\.name)
        #expect(norms[try #require(names.firstIndex(of: "blocks.0"))] == 5)
        #expect(norms[try #require(names.firstIndex(of: "head"))] == 0)
        #expect(monitor.firstNonFinite(squared) == "module.predictor.0.weight")
    }
}

@Suite struct FeatureExtractorTests {
    /// The extractor's features of a short (padded) batch equal the training forward's cls rows.
    @Test func extractorMatchesTheTrainingForward() throws {
        let config = try TinyRun.configuration.modelConfig()
        let layout = try MoCoParameters(config)
        let backend = HostBackend()
        let model = try MoCoModel(parameters: layout, backend: backend, batchSize: 4, initial: layout.initialValues(seed: 3))
        var generator = SplitMix64(seed: 9)
        let count = 4 * 3 * 8 * 8
        let x1 = randomValues(count, using: &generator), x2 = randomValues(count, using: &generator)
        _ = try model.forward(x1: backend.makeTensor(x1, shape: [4, 3, 8, 8]), x2: backend.makeTensor(x2, shape: [4, 3, 8, 8]))
        let expected = try model.baseFeatures(view: 0)
        let extractor = try FeatureExtractor(layout: layout, parameterTensor: model.parameterTensor, backend: backend,
                                             batchSize: 5)
        let features = try extractor.features(of: Array(x1[0..<(3 * 3 * 8 * 8)]), count: 3)
        #expect(features.count == 3 * 16)
        for (a, b) in zip(features, expected.prefix(3 * 16)) { #expect(abs(a - b) <= 1e-6 + 1e-5 * abs(b)) }
    }
}
