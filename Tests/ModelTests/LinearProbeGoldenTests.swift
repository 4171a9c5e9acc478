import Foundation
import Model
import Tensors
import Testing
import TestSupport
import Train

/// The linear probe's step against an independent PyTorch implementation (tools/golden.py
/// --lincls): a frozen tiny trunk in evaluation mode, a 10-class head from a fixed init, SGD
/// momentum 0.9 wd 0 with the per-epoch cosine lr, two epochs of batches 5, 5 and 3 (the short
/// last batch of drop_last=False), with and without the parameter-free BN head.
@Suite struct LinearProbeGoldenTests {
    func run(on backend: any Backend, batchNorm: Bool) throws {
        let golden = try fixtureFile("golden_lincls")
        let variant = batchNorm ? "bn" : "plain"
        let vit = try PretrainedViT(file: try linclsTrunkFile())
        let parameters = try backend.makeTensor(vit.parameters, shape: [vit.parameters.count])
        let extractor = try FeatureExtractor(layout: vit.layout, parameterTensor: parameters, backend: backend, batchSize: 5)
        let head = try ClassifierHead(backend: backend, width: 64, classes: 10, batchSize: 5, batchNorm: batchNorm)
        try head.load(weight: try golden.floats("head_init.weight"), bias: [Float](repeating: 0, count: 10))
        let optimizer = try SGD(backend: backend, segments: head.segments, weightDecay: 0, momentum: 0.9)
        // The fixture's peak lr 0.1 at batch 5 is --lr 0.1·256/5 under the B/256 rule; 4 epochs.
        var configuration = LinearProbeConfiguration()
        configuration.batchSize = 5
        configuration.lr = 0.1 * 256 / 5
        configuration.epochs = 4
        let peak = try #require(golden.metadata["peak_lr"].flatMap(Double.init))
        #expect(abs(configuration.peakLearningRate - peak) < 1e-15)

        for step in 0..<6 {
            let (epoch, count) = (step / 3, [5, 5, 3][step % 3])
            let x = try golden.floats("batch\(step).x", shape: [count, 3, 16, 16])
            let labels = try golden.int64s("batch\(step).y").map { Int32($0) }
            let features = try extractor.featureTensor(of: x, count: count)
            if step == 0 {
                expectClose(Array(try backend.download(features)[0..<(count * 64)]),
                            try golden.floats("\(variant).step0.features"), relative: 1e-5, absolute: 1e-5, "features")
                if !batchNorm {   // the BN head's step-0 logits use the batch's statistics; logits(…) the running ones
                    expectClose(try head.logits(features: features, count: count), try golden.floats("plain.step0.logits"),
                                relative: 1e-5, absolute: 1e-6, "step-0 logits")
                }
            }
            let loss = try head.lossAndGradients(features: features, labels: labels)
            expectClose([loss], try golden.floats("\(variant).step\(step).loss"), relative: 1e-5, absolute: 1e-6,
                        "\(variant) loss of step \(step)")
            try optimizer.step(parameters: head.parameterTensor, gradients: head.gradientTensor,
                               learningRate: configuration.learningRate(epoch: epoch), step: step + 1)
        }
        // The BN head divides by per-channel batch deviations as small as 0.05 (3-sample batches), which
        // scales float32 rounding of the features by ~20: 1e-5 absolute there, 1e-6 without it.
        let absolute = batchNorm ? 1e-5 : 1e-6
        let (weight, bias) = try head.values()
        expectClose(weight, try golden.floats("\(variant).final.head.weight"), relative: 1e-5, absolute: absolute, "head.weight")
        expectClose(bias, try golden.floats("\(variant).final.head.bias"), relative: 1e-5, absolute: absolute, "head.bias")
        let momentum = try backend.download(optimizer.momentumBuffer)
        let w = head.table["head.weight"]!, b = head.table["head.bias"]!
        expectClose(Array(momentum[w.offset..<(w.offset + w.count)]), try golden.floats("\(variant).final.momentum.weight"),
                    relative: 1e-5, absolute: absolute, "momentum buffer of head.weight")
        expectClose(Array(momentum[b.offset..<(b.offset + b.count)]), try golden.floats("\(variant).final.momentum.bias"),
                    relative: 1e-5, absolute: absolute, "momentum buffer of head.bias")
        if batchNorm {
            let statistics = try #require(try head.normalizationValues())
            expectClose(statistics[0], try golden.floats("bn.final.running_mean"), relative: 1e-5, absolute: 1e-6, "running_mean")
            expectClose(statistics[1], try golden.floats("bn.final.running_var"), relative: 1e-5, absolute: 1e-6, "running_var")
            #expect(statistics[2] == [6])
        }
        // Evaluation mode on a held-out batch: the BN head on its running statistics, nothing changes.
        let before = try head.normalizationValues()
        let valX = try golden.floats("val.x")
        let valFeatures6 = try FeatureExtractor(layout: vit.layout, parameterTensor: parameters, backend: backend, batchSize: 6)
            .featureTensor(of: valX, count: 6)
        let head6 = try ClassifierHead(backend: backend, width: 64, classes: 10, batchSize: 6, batchNorm: batchNorm)
        try head6.load(weight: weight, bias: bias)
        if let before { try head6.loadNormalization(before) }
        expectClose(try head6.logits(features: valFeatures6, count: 6), try golden.floats("\(variant).val.logits"),
                    relative: 1e-5, absolute: 1e-5, "\(variant) evaluation logits")
        #expect(try head6.normalizationValues().map { $0 == before! } ?? true)
    }

    @Test func hostMatchesTheGoldenProbe() throws { try run(on: HostBackend(), batchNorm: false) }
    @Test func hostMatchesTheGoldenBNHeadProbe() throws { try run(on: HostBackend(), batchNorm: true) }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func openCLMatchesTheGoldenProbe() throws {
        try run(on: TestDevices.backend(), batchNorm: false)
        try run(on: TestDevices.backend(), batchNorm: true)
    }
}
