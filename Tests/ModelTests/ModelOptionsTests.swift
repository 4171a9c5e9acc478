import Tensors
import Model
import Testing
import TestSupport

/// The paper's ablation options beyond the loss and gradient checks of ``DoubleReferenceTests``:
/// ViT-BN's running statistics, the features each option hands to kNN, and the OpenCL backend.
@Suite struct ModelOptionsTests {
    /// ViT-BN: one forward counts every trunk norm2 twice (one call per view) in both encoders and
    /// moves its running statistics off their init (mean 0, var 1); base and momentum start as
    /// copies and see the same views, so their statistics agree. A second forward counts 4.
    /// (The values themselves are checked against the Double reference in
    /// ``DoubleReferenceTests/floatLossMatchesTheDoubleReference(_:)``.)
    @Test func vitBNRunningStatisticsUpdateInBothEncoders() throws {
        let variant = TinyVariant(mlpNormalization: .batchNorm)
        let setup = try DoubleReferenceSetup(variant)
        _ = try setup.floatForwardBackward()
        let layout = setup.layout
        let first = try setup.backend.download(setup.model.bufferTensor)
        func values(_ buffers: [Float], _ name: String) throws -> [Float] {
            let entry = try #require(layout.buffers[name])
            return Array(buffers[entry.offset..<(entry.offset + entry.count)])
        }
        for block in 0..<variant.depth {
            let relative = "blocks.\(block).norm2"
            for prefix in [MoCoParameters.baseEncoderPrefix, MoCoParameters.momentumEncoderPrefix] {
                let name = prefix + relative
                #expect(try values(first, name + ".num_batches_tracked") == [2], "\(name)")
                let mean = try values(first, name + ".running_mean"), variance = try values(first, name + ".running_var")
                #expect(mean.count == variant.config.vit.embedDim)
                #expect(mean.map(abs).max()! > 1e-3, "\(name).running_mean did not move: \(mean)")
                #expect(variance.map { abs($0 - 1) }.max()! > 1e-3, "\(name).running_var did not move: \(variance)")
            }
            for statistic in [".running_mean", ".running_var"] {
                expectClose(try values(first, MoCoParameters.momentumEncoderPrefix + relative + statistic),
                            try values(first, MoCoParameters.baseEncoderPrefix + relative + statistic),
                            relative: 1e-6, absolute: 1e-7, "momentum vs base \(relative)\(statistic)")
            }
        }

        let (view1, view2) = (try setup.backend.makeTensor(setup.x1, shape: setup.imageShape),
                              try setup.backend.makeTensor(setup.x2, shape: setup.imageShape))
        _ = try setup.model.forward(x1: view1, x2: view2)
        let second = try setup.backend.download(setup.model.bufferTensor)
        let name = MoCoParameters.baseEncoderPrefix + "blocks.0.norm2"
        #expect(try values(second, name + ".num_batches_tracked") == [4])
        #expect(try values(second, name + ".running_mean") != values(first, name + ".running_mean"))
    }

    /// The features the heads read (training forward) and the ones ``FeatureExtractor`` returns
    /// for kNN equal the Double reference's trunk: global average pooling reads the mean of the
    /// final-LN patch rows, and a ViT-BN extractor runs norm2 in evaluation mode on the running
    /// statistics the forward left behind. The extractor's batch is short (3 of 4, padded), which
    /// must not change the rows in any configuration.
    @Test(arguments: [TinyVariant(pooling: .globalAverage), TinyVariant(mlpNormalization: .batchNorm),
                      TinyVariant(pooling: .globalAverage, mlpNormalization: .batchNorm, depth: 1)])
    func featuresMatchTheDoubleReference(_ variant: TinyVariant) throws {
        let setup = try DoubleReferenceSetup(variant)
        _ = try setup.floatForwardBackward()
        let (reference, model) = (setup.reference, setup.model)
        let parameters = setup.initial.parameters.map(Double.init)
        let (x1, x2) = (setup.x1.map(Double.init), setup.x2.map(Double.init))
        var buffers = setup.initial.buffers.map(Double.init)
        let base = reference.trunk(parameters: parameters, buffers: &buffers, prefix: MoCoParameters.baseEncoderPrefix,
                                   images: x1)
        let momentum = reference.trunk(parameters: parameters, buffers: &buffers,
                                       prefix: MoCoParameters.momentumEncoderPrefix, images: x2)
        expectClose(try model.baseFeatures(view: 0), base.map { Float($0) }, "\(variant): base features, view 1")
        expectClose(try model.momentumFeatures(), momentum.map { Float($0) }, "\(variant): momentum features, view 2")

        let extractor = try FeatureExtractor(layout: setup.layout, parameterTensor: model.parameterTensor,
                                             bufferTensor: model.bufferTensor, backend: setup.backend,
                                             batchSize: TinyVariant.batchSize)
        let vit = variant.config.vit
        let (count, imageCount) = (3, vit.channels * vit.imageSize * vit.imageSize)
        let features = try extractor.features(of: Array(setup.x1[0..<(count * imageCount)]), count: count)
        var running = try setup.backend.download(model.bufferTensor).map(Double.init)
        let before = running
        let evaluation = reference.trunk(parameters: parameters, buffers: &running,
                                         prefix: MoCoParameters.baseEncoderPrefix, images: x1, training: false)
        #expect(running == before)
        expectClose(features, evaluation.prefix(count * vit.embedDim).map { Float($0) },
                    "\(variant): FeatureExtractor (evaluation mode, padded batch)")
        #expect(try setup.backend.download(model.bufferTensor) == before.map { Float($0) },
                "\(variant): feature extraction changed the BN buffers")
    }

    @Test func vitBNFeatureExtractorNeedsTheBuffers() throws {
        let setup = try DoubleReferenceSetup(TinyVariant(mlpNormalization: .batchNorm))
        let message = configErrorMessage {
            _ = try FeatureExtractor(layout: setup.layout, parameterTensor: setup.model.parameterTensor,
                                     backend: setup.backend, batchSize: 2)
        }
        #expect(message?.contains("bufferTensor") == true, "\(message ?? "no error")")
    }

    /// The options on the OpenCL backend (strided-batched GEMMs of the pooling, BatchNorm over
    /// (B·N, C)) against the host model: loss, every trainable gradient and the BN buffers.
    /// Tolerances as the golden gradients (fp32 on both sides, different summation orders).
    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason),
          arguments: [TinyVariant(pooling: .globalAverage, mlpNormalization: .batchNorm)])
    func openCLMatchesTheHostModel(_ variant: TinyVariant) throws {
        let host = try DoubleReferenceSetup(variant)
        let hostLoss = try host.floatForwardBackward()
        let device = try TestDevices.backend()
        let model = try MoCoModel(parameters: host.layout, backend: device, batchSize: TinyVariant.batchSize,
                                  initial: host.initial)
        let (view1, view2) = (try device.makeTensor(host.x1, shape: host.imageShape),
                              try device.makeTensor(host.x2, shape: host.imageShape))
        let loss = try model.forward(x1: view1, x2: view2)
        try model.zeroGradients()
        try model.backward(x1: view1, x2: view2)
        #expect(abs(loss - hostLoss) <= 1e-5 * abs(hostLoss), "\(variant): OpenCL loss \(loss), host \(hostLoss)")
        let layout = host.layout
        for entry in layout.table.entries where entry.trainable && entry.offset < layout.trainableRegion.upperBound {
            let expected = try host.backend.download(host.model.gradient(named: entry.name))
            let actual = try device.download(model.gradient(named: entry.name))
            let scale = Double(expected.map(abs).max() ?? 0)
            expectClose(actual, expected, relative: 1e-4, absolute: 1e-6 + 1e-4 * scale, "\(variant): grad \(entry.name)")
        }
        expectClose(try device.download(model.bufferTensor), try host.backend.download(host.model.bufferTensor),
                    relative: 1e-4, absolute: 1e-5, "\(variant): BN buffers")
        expectClose(try model.baseFeatures(view: 1), try host.model.baseFeatures(view: 1), "\(variant): pooled features")
    }
}
