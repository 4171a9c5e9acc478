import Foundation
import Tensors
import Model
import Testing
import TestSupport

/// A tiny MoCo v3 for whole-model checks against ``ReferenceMoCo`` in Double: 8×8 images, patch
/// 4 (N = 5 tokens), width 8, 2 heads, heads of width 16 → 8, batch 4.
struct TinyVariant: CustomStringConvertible, Sendable {
    var pooling: ViTConfig.Pooling = .classToken
    var mlpNormalization: ViTConfig.MLPNormalization = .layerNorm
    var depth = 2

    static let batchSize = 4

    var config: MoCoConfig {
        MoCoConfig(vit: ViTConfig(imageSize: 8, patchSize: 4, embedDim: 8, depth: depth, heads: 2,
                                  pooling: pooling, mlpNormalization: mlpNormalization),
                   mocoDim: 8, mocoMLPDim: 16, temperature: 0.2)
    }

    var description: String { "pooling \(pooling), norm2 \(mlpNormalization), depth \(depth)" }
}

/// A Float model and the Double reference at the same point: the layout's seeded init and two
/// seeded views (Float values, so both sides see exactly the same numbers).
struct DoubleReferenceSetup {
    let layout: MoCoParameters
    let model: MoCoModel
    let reference: ReferenceMoCo<Double>
    let initial: (parameters: [Float], buffers: [Float])
    let x1: [Float], x2: [Float]
    let backend = HostBackend()

    init(_ variant: TinyVariant) throws {
        layout = try MoCoParameters(variant.config)
        initial = layout.initialValues(seed: 11)
        let B = TinyVariant.batchSize
        model = try MoCoModel(parameters: layout, backend: backend, batchSize: B, initial: initial)
        reference = ReferenceMoCo(layout: layout, batchSize: B)
        let vit = variant.config.vit
        let count = B * vit.channels * vit.imageSize * vit.imageSize
        x1 = randomDoubles(count, seed: 21).map { Float($0) }
        x2 = randomDoubles(count, seed: 22).map { Float($0) }
    }

    var imageShape: [Int] {
        let vit = layout.config.vit
        return [TinyVariant.batchSize, vit.channels, vit.imageSize, vit.imageSize]
    }

    /// The Float model's loss, then its analytic gradient (no EMA: the keys do not depend on θ).
    func floatForwardBackward() throws -> Float {
        let (view1, view2) = (try backend.makeTensor(x1, shape: imageShape), try backend.makeTensor(x2, shape: imageShape))
        let loss = try model.forward(x1: view1, x2: view2)
        try model.zeroGradients()
        try model.backward(x1: view1, x2: view2)
        return loss
    }
}

@Suite struct DoubleReferenceTests {
    static let variants = [
        TinyVariant(),
        TinyVariant(pooling: .globalAverage),
        TinyVariant(mlpNormalization: .batchNorm),
        TinyVariant(pooling: .globalAverage, mlpNormalization: .batchNorm, depth: 1),
    ]

    /// (a) The Float model's forward equals the Double reference's loss, and the BN buffers after
    /// it (running statistics of every BN, both encoders, both views in turn) agree too. fp32
    /// tolerance: the loss is a sum of O(1) terms, so rtol 1e-5 with atol 1e-6 leaves ~10× room
    /// over float32 rounding of a few hundred operations.
    @Test(arguments: variants)
    func floatLossMatchesTheDoubleReference(_ variant: TinyVariant) throws {
        let setup = try DoubleReferenceSetup(variant)
        let loss = try setup.floatForwardBackward()
        let reference = setup.reference.forward(parameters: setup.initial.parameters.map(Double.init),
                                                buffers: setup.initial.buffers.map(Double.init),
                                                x1: setup.x1.map(Double.init), x2: setup.x2.map(Double.init))
        print("[\(variant)] loss float \(loss), double \(reference.loss), |Δ| \(abs(Double(loss) - reference.loss))")
        #expect(abs(Double(loss) - reference.loss) <= 1e-6 + 1e-5 * abs(reference.loss),
                "\(variant): float loss \(loss) vs double \(reference.loss)")
        let buffers = try setup.backend.download(setup.model.bufferTensor)
        expectClose(buffers, reference.buffers.map { Float($0) }, relative: 1e-4, absolute: 1e-5,
                    "\(variant): BN buffers after one forward")
    }

    /// (b) Central differences of the Double loss against the Float model's analytic gradient,
    /// for a seeded sample of elements of every trainable tensor (base encoder and predictor).
    ///
    /// Step: h = 1e-5, except cls_token (init std 1e-6): its row enters LN1 with variance ≪ ε, so
    /// the loss bends on the scale of the row itself; h = 1e-8 there (Double rounding of the
    /// O(1) loss over 2h is ~1e-8, far below its ~1e1 gradients).
    ///
    /// Tolerance `|a − n| ≤ atol + rtol·|n|` with rtol 1e-4 and atol 1e-5 × max(the tensor's
    /// largest analytic gradient magnitude, the median of those over all tensors). The analytic
    /// side is float32 through ~20 layers: measured relative errors are 1e-6 to 4e-5 on elements
    /// of ordinary size; the Double difference quotient is good to ~1e-9. The absolute part
    /// covers elements whose gradient is zero analytically and float32 noise (~1e-6) on the Float
    /// side: all of `norm.bias` (SPEC A.2) and the K slice of `attn.qkv.bias` (a constant added
    /// to every key of a query's row leaves its softmax unchanged); the median floor is for
    /// `norm.bias`, whose own largest value is that noise.
    @Test(arguments: variants)
    func floatGradientMatchesDoubleFiniteDifferences(_ variant: TinyVariant) throws {
        let setup = try DoubleReferenceSetup(variant)
        _ = try setup.floatForwardBackward()
        let layout = setup.layout
        let reference = setup.reference
        var parameters = setup.initial.parameters.map(Double.init)
        let buffers = setup.initial.buffers.map(Double.init)
        let (x1, x2) = (setup.x1.map(Double.init), setup.x2.map(Double.init))
        var keyBuffers = buffers
        let k1 = reference.key(parameters: parameters, buffers: &keyBuffers, images: x1)
        let k2 = reference.key(parameters: parameters, buffers: &keyBuffers, images: x2)

        let entries = layout.table.entries.filter { $0.trainable && $0.offset < layout.trainableRegion.upperBound }
        let gradients = try entries.map { try setup.backend.download(setup.model.gradient(named: $0.name)) }
        let scales = gradients.map { gradient in gradient.map { abs(Double($0)) }.max() ?? 0 }
        let medianScale = scales.sorted()[scales.count / 2]
        var expectedNames = ["cls_token", "norm.weight", "norm.bias", "head.0.weight", "head.1.weight",
                             "head.1.bias", "head.3.weight", "head.4.weight", "head.4.bias", "head.6.weight"]
            .map { MoCoParameters.baseEncoderPrefix + $0 }
        expectedNames += ["0.weight", "1.weight", "1.bias", "3.weight"].map { MoCoParameters.predictorPrefix + $0 }
        if !layout.config.vit.stopGradConv1 {
            expectedNames += ["patch_embed.proj.weight", "patch_embed.proj.bias"].map { MoCoParameters.baseEncoderPrefix + $0 }
        }
        for block in 0..<layout.config.vit.depth {
            for name in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"] {
                for kind in ["weight", "bias"] {
                    expectedNames.append(MoCoParameters.baseEncoderPrefix + "blocks.\(block).\(name).\(kind)")
                }
            }
        }
        #expect(Set(entries.map(\.name)) == Set(expectedNames), "\(variant): trainable tensors")

        let samplesPerTensor = 3
        var random = SplitMix64(seed: 5)
        var worst = (ratio: 0.0, description: "none")
        var checked = 0
        for (tensor, entry) in entries.enumerated() {
            let gradient = gradients[tensor]
            let absolute = 1e-5 * max(scales[tensor], medianScale), relative = 1e-4
            let h = entry.name.hasSuffix("cls_token") ? 1e-8 : 1e-5
            var indices = Set<Int>()
            while indices.count < min(samplesPerTensor, entry.count) { indices.insert(Int(random.next() % UInt64(entry.count))) }
            for index in indices.sorted() {
                let offset = entry.offset + index
                let original = parameters[offset]
                func loss(_ value: Double) -> Double {
                    parameters[offset] = value
                    return reference.loss(parameters: parameters, buffers: buffers, x1: x1, x2: x2, k1: k1, k2: k2)
                }
                let numerical = (loss(original + h) - loss(original - h)) / (2 * h)
                parameters[offset] = original
                let analytic = Double(gradient[index])
                let ratio = abs(analytic - numerical) / (absolute + relative * abs(numerical))
                checked += 1
                if !(ratio <= worst.ratio) {
                    worst = (ratio.isNaN ? .infinity : ratio,
                             "\(entry.name)[\(index)]: analytic \(analytic), finite difference \(numerical) "
                             + "(|Δ| \(abs(analytic - numerical)), error/tolerance \(ratio))")
                }
            }
        }
        print("[\(variant)] \(checked) elements of \(entries.count) tensors; worst \(worst.description)")
        #expect(worst.ratio <= 1, "\(variant): worst element \(worst.description)")
    }
}
