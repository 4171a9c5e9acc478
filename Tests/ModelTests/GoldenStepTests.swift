import Collective
import Foundation
import Tensors
import Model
import Testing
import TestSupport
import Train

/// The golden fixture's setup, loaded once per test: a model at the fixture's init on `backend`.
struct GoldenStepSetup {
    let file: SafetensorsFile
    let layout: MoCoParameters
    let model: MoCoModel
    /// The iteration `pretrain` runs, with AdamW (the fixtures' optimizer).
    let trainingStep: MoCoTrainingStep
    /// This rank's rows of the two views.
    let x1: Tensor, x2: Tensor
    let momentum: Float
    let learningRate: Double, weightDecay: Double

    /// - Parameters:
    ///   - stopGradient: run `golden_tiny_stopgrad` (init still from `golden_tiny`).
    ///   - fixture: another fixture with its own `init.*` (the option runs, `golden_small_*`).
    ///   - run: a fixture of steps without `init.*` that starts from `fixture`'s init
    ///     (`golden_dp_vitbn`, the data-parallel run of `golden_small_vitbn`).
    ///   - communicator: the data-parallel group; this rank trains its slice of the global batch.
    ///   - bucketBytes: the gradient all-reduce's bucket size when data parallel.
    init(on backend: any Backend, stopGradient: Bool = false, fixture: String = "golden_tiny", run: String? = nil,
         communicator: any Communicator = SingleProcess(), bucketBytes: Int = MoCoTrainingStep.defaultBucketBytes) throws {
        let (initFile, baseConfig) = try goldenFixture(fixture)
        var config = baseConfig
        if let run = stopGradient ? "golden_tiny_stopgrad" : run {
            let url = try #require(Bundle.module.url(forResource: run, withExtension: "safetensors", subdirectory: "Fixtures"))
            file = try SafetensorsFile(contentsOf: url)
            for key in ["embed_dim", "depth", "moco_dim", "vit_bn", "batch_size", "seed"] {
                #expect(file.metadata[key] == initFile.metadata[key], "\(run) and \(fixture) differ in \(key)")
            }
        } else {
            file = initFile
        }
        if stopGradient {
            #expect(file.metadata["stop_grad_conv1"] == "1")
            config.vit.stopGradConv1 = true
        }
        layout = try MoCoParameters(config)
        let batch = try #require(file.metadata["batch_size"].flatMap { Int($0) })
        momentum = try #require(file.metadata["moco_m"].flatMap { Float($0) })
        learningRate = try #require(file.metadata["lr"].flatMap { Double($0) })
        weightDecay = try #require(file.metadata["weight_decay"].flatMap { Double($0) })
        let local = batch / communicator.size
        model = try MoCoModel(parameters: layout, backend: backend, batchSize: local,
                              initial: try goldenInitialValues(initFile, layout), communicator: communicator)
        trainingStep = try MoCoTrainingStep(model: model, optimizer: AdamW(
            backend: backend, segments: model.trainableSegments, weightDecay: weightDecay), bucketBytes: bucketBytes)
        let image = config.vit.channels * config.vit.imageSize * config.vit.imageSize
        let imageShape = [batch, config.vit.channels, config.vit.imageSize, config.vit.imageSize]
        let rows = (communicator.rank * local * image)..<((communicator.rank + 1) * local * image)
        let localShape = [local] + imageShape.dropFirst()
        x1 = try backend.makeTensor(Array(try file.floats("x1", shape: imageShape)[rows]), shape: localShape)
        x2 = try backend.makeTensor(Array(try file.floats("x2", shape: imageShape)[rows]), shape: localShape)
    }

    /// Trainable entries (base encoder and predictor, frozen ones left out).
    var trainableEntries: [ParameterTable.Entry] {
        layout.table.entries.filter { $0.trainable && $0.offset < layout.trainableRegion.upperBound }
    }

    func step(_ number: Int) throws -> Float {
        let outcome = try trainingStep(x1: x1, x2: x2, learningRate: learningRate, momentum: Double(momentum),
                                       step: number)
        #expect(outcome.applied, "step \(number) was not finite")
        return outcome.loss
    }
}

/// `max|ref|` of a tensor: the scale of its absolute tolerance.
func magnitude(_ values: [Float]) -> Double { Double(values.map(abs).max() ?? 0) }

/// The final LN's bias gets ∂/∂β = Σ over the cls rows of ∂loss/∂feature, and the projector's
/// first BN (training mode) makes the loss invariant to a constant shift of its input, so this
/// gradient is 0 analytically and float32 noise (~1e-7) on both sides (fixture README).
let zeroGradientName = "module.base_encoder.norm.bias"

/// Every `step0.grad.<name>` of the setup's fixture against the flat `gradient`.
func expectGoldenGradients(_ gradient: [Float], setup: GoldenStepSetup, label: String) throws {
    var worst = (name: "", ratio: 0.0, error: 0.0)
    for entry in setup.trainableEntries {
        let expected = try setup.file.floats("step0.grad." + entry.name, shape: entry.shape)
        let actual = Array(gradient[entry.offset..<(entry.offset + entry.count)])
        // fp32 on both sides with different summation orders through ~30 layers: rtol 1e-4 plus
        // an atol of 1e-4 of the tensor's largest element (small elements are sums of
        // cancelling terms). The analytically zero gradient: absolute 1e-6 (noise is ~1e-7).
        let absolute = entry.name == zeroGradientName ? 1e-6 : 1e-5 + 1e-4 * magnitude(expected)
        expectClose(actual, expected, relative: 1e-4, absolute: absolute, "\(label) step0.grad.\(entry.name)")
        for (a, r) in zip(actual, expected) {
            let error = Double(abs(a - r))
            let ratio = error / (absolute + 1e-4 * Double(abs(r)))
            if ratio > worst.ratio || ratio.isNaN { worst = (entry.name, ratio, error) }
        }
    }
    print("golden gradients [\(label)]: worst tensor \(worst.name), |ours − torch| = \(worst.error), "
        + "\(worst.ratio) of its tolerance")
}

/// Step 0 of tools/golden.py: EMA, forward, backward; every `step0.grad.<name>`.
func checkGoldenGradients(on backend: any Backend, fixture: String = "golden_tiny") throws {
    let setup = try GoldenStepSetup(on: backend, fixture: fixture)
    let model = setup.model
    try model.momentumUpdate(m: setup.momentum)
    _ = try model.forward(x1: setup.x1, x2: setup.x2)
    try backend.fill(model.gradientTensor, value: 0)
    try model.backward(x1: setup.x1, x2: setup.x2)

    try expectGoldenGradients(try backend.download(model.gradientTensor), setup: setup, label: "\(backend.name) \(fixture)")

    // A second backward allocates nothing.
    let before = backend.pool.statistics.driverAllocations
    try backend.fill(model.gradientTensor, value: 0)
    try model.backward(x1: setup.x1, x2: setup.x2)
    #expect(backend.pool.statistics.driverAllocations == before)
}

/// Three full steps: losses, then every parameter and BN buffer after the third AdamW step.
func checkGoldenSteps(on backend: any Backend, stopGradient: Bool = false, fixture: String = "golden_tiny") throws {
    let setup = try GoldenStepSetup(on: backend, stopGradient: stopGradient, fixture: fixture)
    let label = "\(backend.name) \(fixture)\(stopGradient ? " stop-grad" : "")"
    var allocations = 0
    var losses: [Float] = []
    for number in 1...3 {
        if number == 2 { allocations = backend.pool.statistics.driverAllocations }
        losses.append(try setup.step(number))
    }
    #expect(backend.pool.statistics.driverAllocations == allocations, "steps 2 and 3 allocated")
    let parameters = try backend.download(setup.model.parameterTensor)
    try expectGoldenRun(losses: losses, parameters: parameters, buffers: try backend.download(setup.model.bufferTensor),
                        setup: setup, label: label)

    if stopGradient {
        // The frozen patch projection: no gradient, and unchanged by three AdamW steps.
        let (initFile, _) = try goldenTiny()
        for name in ["patch_embed.proj.weight", "patch_embed.proj.bias"] {
            let entry = try #require(setup.layout.table[MoCoParameters.baseEncoderPrefix + name])
            #expect(!entry.trainable)
            #expect(!setup.file.names.contains("step0.grad." + entry.name))
            let gradient = try backend.download(try setup.model.gradient(named: entry.name))
            #expect(gradient.allSatisfy { $0 == 0 }, "\(entry.name) received a gradient")
            let initial = try initFile.floats("init." + entry.name, shape: entry.shape)
            #expect(Array(parameters[entry.offset..<(entry.offset + entry.count)]) == initial,
                    "\(entry.name) changed under stop_grad_conv1")
        }
    }
}

/// The three losses, then every parameter and BN buffer after the third AdamW step, against
/// the setup's fixture.
func expectGoldenRun(losses: [Float], parameters: [Float], buffers: [Float], setup: GoldenStepSetup,
                     label: String) throws {
    #expect(losses.count == 3)
    for (t, loss) in losses.enumerated() {
        let expected = try setup.file.floats("step\(t).loss", shape: [1])
        expectClose([loss], expected, "\(label) step\(t).loss")
        print("golden step [\(label)] step\(t).loss: ours \(loss), torch \(expected[0])")
    }

    // Tolerances of the final weights. The bulk is compared at rtol 1e-4, atol 1e-4 (a tenth of
    // one step's lr): three AdamW updates of fp32 gradients that agree to ~1e-5 relative.
    // Two sets of elements have an analytically zero gradient, so float32 noise (~1e-7) is all
    // either implementation sees, and AdamW's first update lr·g/(|g| + ε) ≈ ±lr turns that noise
    // into a random walk of ±lr per step, different on each side (they can differ by 2·3·lr):
    // - `norm.bias` (see `zeroGradientName`);
    // - the K third of every `attn.qkv.bias`: adding a constant to all keys adds q·b to every
    //   logit of a row, which softmax ignores.
    // Those are checked only to lie within 6 lr of the reference. One buffer inherits that walk:
    // `head.1.running_mean` averages head.0's input, which shifts with norm.bias (the loss does
    // not, the BN removes the shift). Its drift is ≤ 0.1·Σ_forwards |W₀·Δβ| ≈ 1e-3 (measured
    // 6e-4), so it gets atol 2e-3; running_var is shift-invariant and keeps the tight bound.
    let walk = 6.01 * setup.learningRate
    let C = setup.layout.config.vit.embedDim
    var worst = (name: "", error: 0.0)
    for entry in setup.layout.table.entries {
        let expected = try setup.file.floats("final." + entry.name, shape: entry.shape)
        let actual = Array(parameters[entry.offset..<(entry.offset + entry.count)])
        var tight = Array(0..<entry.count), loose: [Int] = []
        if entry.name == zeroGradientName {
            (tight, loose) = ([], tight)
        } else if entry.name.hasPrefix(MoCoParameters.baseEncoderPrefix) && entry.name.hasSuffix("attn.qkv.bias") {
            (tight, loose) = (Array(0..<C) + Array(2 * C..<3 * C), Array(C..<2 * C))
        }
        expectClose(tight.map { actual[$0] }, tight.map { expected[$0] }, relative: 1e-4, absolute: 1e-4,
                    "\(label) final.\(entry.name)")
        expectClose(loose.map { actual[$0] }, loose.map { expected[$0] }, relative: 0, absolute: walk,
                    "\(label) final.\(entry.name) (zero-gradient elements)")
        let error = tight.map { Double(abs(actual[$0] - expected[$0])) }.max() ?? 0
        if error > worst.error { worst = (entry.name, error) }
    }
    print("golden step [\(label)]: worst final parameter \(worst.name), |ours − torch| = \(worst.error)")
    for entry in setup.layout.buffers.entries {
        let actual = Array(buffers[entry.offset..<(entry.offset + entry.count)])
        let expected = entry.name.hasSuffix("num_batches_tracked")
            ? try setup.file.int64s("final." + entry.name).map(Float.init)
            : try setup.file.floats("final." + entry.name, shape: entry.shape)
        let absolute = entry.name == MoCoParameters.baseEncoderPrefix + "head.1.running_mean" ? 2e-3 : 1e-4
        expectClose(actual, expected, relative: 1e-4, absolute: absolute, "\(label) final.\(entry.name)")
    }
}

@Suite struct GoldenStepTests {
    @Test func hostGradientsMatchTheGoldenStep0() throws {
        try checkGoldenGradients(on: HostBackend())
    }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func openCLGradientsMatchTheGoldenStep0() throws {
        try checkGoldenGradients(on: try TestDevices.backend())
    }

    @Test func hostStepsMatchTheGoldenRun() throws {
        try checkGoldenSteps(on: HostBackend())
    }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func openCLStepsMatchTheGoldenRun() throws {
        try checkGoldenSteps(on: try TestDevices.backend())
    }

    @Test func hostStopGradientStepsMatchTheGoldenRun() throws {
        try checkGoldenSteps(on: HostBackend(), stopGradient: true)
    }

    /// The whole loss against central differences, on the host. There is no Double model: the
    /// model exists in float32 only, so the loss carries ~1e-7 relative rounding noise and the
    /// step must be large (h = 1e-2·max(|θ|, 0.1)) for the difference quotient to rise above it,
    /// at the cost of O(h²) truncation error: hence a loose 2e-2 relative tolerance (plus 2e-2 of
    /// the tensor's largest gradient for the noise). This catches a wrong sign, scale or missing
    /// term, not rounding. cls_token is the exception: it is initialised at std 1e-6, so its row
    /// enters LN1 with variance ≪ ε = 1e-6, LN1 scales it by 1/√ε = 1e3 (gradients ~100), and the
    /// loss bends on the scale of the row itself. Measured: h = 1e-4 is 10–50 % off, h = 1e-5 up
    /// to 25 %, h ≤ 3e-6 converges to the analytic value; h = 1e-6 there (|g|·h ~ 1e-5, still
    /// ~100× the loss's rounding noise).
    @Test func hostGradientMatchesFiniteDifferencesOfTheLoss() throws {
        let backend = HostBackend()
        let setup = try GoldenStepSetup(on: backend)
        let model = setup.model
        // No EMA here: the keys then do not depend on the base encoder, as in the analytic gradient.
        _ = try model.forward(x1: setup.x1, x2: setup.x2)
        try backend.fill(model.gradientTensor, value: 0)
        try model.backward(x1: setup.x1, x2: setup.x2)
        let gradient = try backend.download(model.gradientTensor)
        var parameters = try backend.download(model.parameterTensor)

        var random = SplitMix64(seed: 7)
        let names = ["module.base_encoder.blocks.1.attn.qkv.weight", "module.base_encoder.blocks.0.mlp.fc2.bias",
                     "module.base_encoder.head.0.weight", "module.predictor.3.weight", "module.base_encoder.cls_token"]
        for name in names {
            let entry = try #require(setup.layout.table[name])
            let scale = magnitude(Array(gradient[entry.offset..<(entry.offset + entry.count)]))
            for _ in 0..<5 {
                let index = entry.offset + Int(random.next() % UInt64(entry.count))
                let original = parameters[index]
                let h: Float = name.hasSuffix("cls_token") ? 1e-6 : 1e-2 * max(abs(original), 0.1)
                func loss(at value: Float) throws -> Double {
                    parameters[index] = value
                    try backend.upload(parameters, to: model.parameterTensor)
                    return Double(try model.forward(x1: setup.x1, x2: setup.x2))
                }
                let difference = (try loss(at: original + h) - loss(at: original - h)) / Double(2 * h)
                parameters[index] = original
                try backend.upload(parameters, to: model.parameterTensor)
                let analytic = Double(gradient[index])
                let tolerance = 2e-2 * abs(analytic) + 2e-2 * scale
                #expect(abs(difference - analytic) <= tolerance,
                        "\(name)[\(index - entry.offset)]: finite difference \(difference), analytic \(analytic)")
            }
        }
    }
}
