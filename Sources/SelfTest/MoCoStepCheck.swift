import Foundation
import Model
import Tensors
import Train

/// Whole MoCo v3 iterations (`MoCoTrainingStep`, the code `pretrain` runs) on a device and on the
/// host from the same seeded weights and views: the losses, the four head outputs, every
/// gradient of the last iteration, and every parameter and BN buffer after it.
public struct MoCoStepCheck {
    public let name: String
    public let config: MoCoConfig
    public let batchSize: Int
    public let steps: Int
    public let optimizer: OptimizerKind
    /// Small enough that AdamW's first updates (±lr wherever a gradient is float noise around an
    /// analytic zero, see GoldenStepTests) stay inside the parameters' absolute tolerance.
    public let learningRate = 1e-5

    public init(name: String, config: MoCoConfig, batchSize: Int, steps: Int = 2, optimizer: OptimizerKind = .adamw) {
        self.name = name
        self.config = config
        self.batchSize = batchSize
        self.steps = steps
        self.optimizer = optimizer
    }

    /// A ViT of 2 blocks on 24 px images in 6 px patches (17 tokens, width 48, 3 heads of 16) with
    /// heads 64 → 24, batch 6: every layer of the model in seconds; and the same as ViT-BN with
    /// average pooling and LARS.
    public static let standard: [MoCoStepCheck] = {
        let vit = ViTConfig(imageSize: 24, patchSize: 6, embedDim: 48, depth: 2, heads: 3)
        var vitBN = vit
        vitBN.mlpNormalization = .batchNorm
        vitBN.pooling = .globalAverage
        vitBN.stopGradConv1 = true
        return [
            MoCoStepCheck(name: "ViT, AdamW", config: MoCoConfig(vit: vit, mocoDim: 24, mocoMLPDim: 64),
                          batchSize: 6),
            MoCoStepCheck(name: "ViT-BN, avg pool, frozen patch, LARS",
                          config: MoCoConfig(vit: vitBN, mocoDim: 24, mocoMLPDim: 64), batchSize: 6, optimizer: .lars),
        ]
    }()

    /// What one backend's run produced, by name.
    struct Run {
        /// Losses and head outputs, gradients, then the weights and buffers after the last update.
        enum Kind { case output, gradient, state }
        var tensors: [(name: String, kind: Kind, values: [Float])] = []
        var seconds = 0.0
    }

    func run(on backend: any Backend) throws -> Run {
        let layout = try MoCoParameters(config)
        let model = try MoCoModel(parameters: layout, backend: backend, batchSize: batchSize,
                                  initial: layout.initialValues(seed: 11))
        let shape = [batchSize, config.vit.channels, config.vit.imageSize, config.vit.imageSize]
        let views = Checkpoint.randomViews(config: config.vit, batchSize: batchSize, seed: 12)
        let x1 = try backend.makeTensor(views.x1, shape: shape), x2 = try backend.makeTensor(views.x2, shape: shape)
        let step = try MoCoTrainingStep(model: model, optimizer: optimizer.make(
            backend: backend, segments: model.trainableSegments, weightDecay: 0.1))
        var run = Run()
        let start = DispatchTime.now().uptimeNanoseconds
        for number in 1...steps {
            let outcome = try step(x1: x1, x2: x2, learningRate: learningRate, momentum: 0.99, step: number)
            run.tensors.append(("loss \(number)", .output, [outcome.loss]))
        }
        run.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        for (label, tensor) in [("q1", model.q1), ("q2", model.q2), ("k1", model.k1), ("k2", model.k2)] {
            run.tensors.append((label, .output, try backend.download(tensor)))
        }
        for entry in layout.table.entries where entry.trainable {
            run.tensors.append(("grad." + entry.name, .gradient, try backend.download(try model.gradient(named: entry.name))))
        }
        let parameters = try backend.download(model.parameterTensor)
        for entry in layout.table.entries {
            run.tensors.append((entry.name, .state, Array(parameters[entry.offset..<(entry.offset + entry.count)])))
        }
        let buffers = try backend.download(model.bufferTensor)
        for entry in layout.buffers.entries {
            run.tensors.append((entry.name, .state, Array(buffers[entry.offset..<(entry.offset + entry.count)])))
        }
        return run
    }

    /// Runs both and compares every tensor: rtol 1e-4 with an absolute part of 1e-4 of the
    /// tensor's largest element (fp32 through every layer in different summation orders, as the
    /// golden-step tests), plus 1e-4 (ten steps' lr) for the weights and buffers.
    public func compare(_ device: any Backend, reference: any Backend) throws -> StepCheckResult {
        let expected = try run(on: reference)
        let actual = try run(on: device)
        var worst: (name: String, comparison: Tensors.ComparisonResult)?
        var failures: [String] = []
        var largestScaledError = 0.0
        for (e, a) in zip(expected.tensors, actual.tensors) {
            let scale = Double(e.values.map(abs).max() ?? 0)
            // Tensors that are float noise around an analytic zero (norm.bias's gradient), or a walk
            // of ±lr per step driven by it (norm.bias itself), have no scale to speak of.
            if scale > (e.kind == .state ? 1e-3 : 1e-5) { largestScaledError = max(largestScaledError, scaledError(a.values, e.values)) }
            let absolute = 1e-5 + 1e-4 * scale + (e.kind == .state ? 1e-4 : 0)
            let comparison = worstError(a.values, e.values, relative: 1e-4, absolute: absolute)
            if !comparison.passed { failures.append("\(e.name): \(comparison)") }
            if worst == nil || comparison.ratio > worst!.comparison.ratio { worst = (e.name, comparison) }
        }
        return StepCheckResult(name: name, tensors: expected.tensors.count, worst: worst,
                               scaledError: largestScaledError, failures: failures, seconds: actual.seconds)
    }
}

/// The outcome of one ``MoCoStepCheck``.
public struct StepCheckResult {
    public let name: String
    public let tensors: Int
    public let worst: (name: String, comparison: Tensors.ComparisonResult)?
    /// The largest ``scaledError(_:_:)`` over the tensors.
    public let scaledError: Double
    /// One line per tensor outside its tolerance.
    public let failures: [String]
    public let seconds: Double

    public var passed: Bool { failures.isEmpty }
}
