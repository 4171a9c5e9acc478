import Foundation
import Tensors
import Model
import Testing

/// The golden fixture from tools/golden.py and the configuration its metadata describes.
func goldenTiny() throws -> (file: SafetensorsFile, config: MoCoConfig) { try goldenFixture("golden_tiny") }

/// A tools/golden.py fixture and the configuration its metadata describes (the option keys
/// `pooling` and `vit_bn` are present only where an option is set).
func goldenFixture(_ name: String) throws -> (file: SafetensorsFile, config: MoCoConfig) {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures"))
    let file = try SafetensorsFile(contentsOf: url)
    func value(_ key: String) throws -> Int { try #require(file.metadata[key].flatMap { Int($0) }, "\(key)") }
    let pooling: ViTConfig.Pooling = file.metadata["pooling"] == "avg" ? .globalAverage : .classToken
    let norm: ViTConfig.MLPNormalization = file.metadata["vit_bn"] == "1" ? .batchNorm : .layerNorm
    let vit = ViTConfig(imageSize: try value("img_size"), patchSize: try value("patch_size"),
                        embedDim: try value("embed_dim"), depth: try value("depth"), heads: try value("num_heads"),
                        mlpRatio: try value("mlp_ratio"), stopGradConv1: try value("stop_grad_conv1") == 1,
                        pooling: pooling, mlpNormalization: norm)
    let temperature = try #require(file.metadata["moco_t"].flatMap { Double($0) })
    return (file, MoCoConfig(vit: vit, mocoDim: try value("moco_dim"), mocoMLPDim: try value("moco_mlp_dim"),
                             temperature: temperature))
}

func values(_ array: [Float], _ entry: ParameterTable.Entry) -> ArraySlice<Float> {
    array[entry.offset..<(entry.offset + entry.count)]
}

func standardDeviation(_ values: ArraySlice<Float>) -> Double {
    let mean = values.reduce(0) { $0 + Double($1) } / Double(values.count)
    return (values.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)).squareRoot()
}

@Suite struct MoCoParametersTests {
    /// The step's FLOP count on a model small enough to count by hand (C 4, 1 head, 1 block, 4×4
    /// images in 2×2 patches: N = 5 tokens, MLP 16 wide; heads 8/2): the patch embedding
    /// 2·4·12·4 = 384; the block's qkv 2·5·4·12 = 480, attention 2·2·25·4 = 400, projection
    /// 2·5·4·4 = 160, MLP 2·2·5·4·16 = 1280; the projector 2·(4·8 + 8·8 + 8·2) = 224, so the
    /// encoder 2928; the predictor 2·(2·8 + 8·2) = 64; the step 2·(3·(2928 + 64) + 2928) = 23808.
    /// And ViT-Tiny/4 @ 32 px with the reference's 4096/256 heads: the 6.2 GFLOP of issue 12.
    @Test func theStepsFLOPCountIsTheHandCount() throws {
        let vit = ViTConfig(imageSize: 4, patchSize: 2, embedDim: 4, depth: 1, heads: 1, mlpRatio: 4, stopGradConv1: true,
                            pooling: .classToken, mlpNormalization: .layerNorm)
        let small = try MoCoParameters(MoCoConfig(vit: vit, mocoDim: 2, mocoMLPDim: 8, temperature: 0.2))
        #expect(small.encoderForwardFLOPs == 2928)
        #expect(small.predictorForwardFLOPs == 64)
        #expect(small.trainingFLOPsPerImage == 23808)
        var tiny = try ViTConfig.named("vit_tiny")
        (tiny.imageSize, tiny.patchSize) = (32, 4)
        let step = try MoCoParameters(MoCoConfig(vit: tiny, mocoDim: 256, mocoMLPDim: 4096, temperature: 0.2)).trainingFLOPsPerImage
        #expect(abs(step / 1e9 - 6.17) < 0.01, "\(step / 1e9) GFLOP")
    }

    /// Every `init.*` tensor of the PyTorch fixture is a parameter or buffer of ours with the same
    /// shape, and nothing of ours is missing from it (num_batches_tracked included, as a buffer).
    @Test func namesAndShapesMatchTheGoldenCheckpoint() throws {
        let (file, config) = try goldenTiny()
        let parameters = try MoCoParameters(config)
        let fixture = file.entries.filter { $0.name.hasPrefix("init.") }
        #expect(fixture.count == 2 * (4 + 12 * 2 + 2 + 7 + 3 * 3) + 4 + 2 * 3)
        var seen = Set<String>()
        for tensor in fixture {
            let name = String(tensor.name.dropFirst("init.".count))
            seen.insert(name)
            let ours = parameters.table[name] ?? parameters.buffers[name]
            #expect(ours?.shape == tensor.shape, "\(name): fixture \(tensor.shape), ours \(ours?.shape ?? [])")
            #expect((parameters.buffers[name] != nil) == (name.contains("running_") || name.contains("num_batches")),
                    "\(name) is in the wrong table")
        }
        for entry in parameters.table.entries + parameters.buffers.entries {
            #expect(seen.contains(entry.name), "\(entry.name) is not in the reference checkpoint")
        }
        // The fixture marks trainable tensors by their step-0 gradient.
        for entry in parameters.table.entries {
            #expect(entry.trainable == file.names.contains("step0.grad." + entry.name), "\(entry.name)")
        }
    }

    @Test func sinCosPositionEmbeddingMatchesTheFixture() throws {
        let (file, config) = try goldenTiny()
        let parameters = try MoCoParameters(config)
        let entry = try #require(parameters.table["module.base_encoder.pos_embed"])
        let reference = try file.floats("init.module.base_encoder.pos_embed", shape: entry.shape)
        let (ours, _) = parameters.initialValues(seed: 7)
        let worst = zip(values(ours, entry), reference).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-6, "worst |ours − reference| = \(worst)")
        #expect(values(ours, entry).prefix(config.vit.embedDim).allSatisfy { $0 == 0 }, "cls row must be zero")
        #expect(!entry.trainable)
    }

    /// Each uniform tensor stays within its SPEC A.2/A.3 bound (computed here independently), and
    /// for large tensors its spread matches both U(±b) (b/√3) and the PyTorch fixture's own init.
    @Test func initializationFollowsTheSpecTable() throws {
        let (file, config) = try goldenTiny()
        let parameters = try MoCoParameters(config)
        let (ours, buffers) = parameters.initialValues(seed: 1)
        let (C, P, h) = (config.vit.embedDim, config.vit.patchSize, config.mocoMLPDim)
        let bounds: [String: Double] = [
            "module.base_encoder.patch_embed.proj.weight": (6.0 / Double(3 * P * P + C)).squareRoot(),
            "module.base_encoder.blocks.0.attn.qkv.weight": (6.0 / Double(2 * C)).squareRoot(),
            "module.base_encoder.blocks.1.attn.proj.weight": (6.0 / Double(2 * C)).squareRoot(),
            "module.base_encoder.blocks.0.mlp.fc1.weight": (6.0 / Double(5 * C)).squareRoot(),
            "module.base_encoder.blocks.1.mlp.fc2.weight": (6.0 / Double(5 * C)).squareRoot(),
            "module.base_encoder.head.0.weight": 1 / Double(C).squareRoot(),
            "module.base_encoder.head.3.weight": 1 / Double(h).squareRoot(),
            "module.base_encoder.head.6.weight": 1 / Double(h).squareRoot(),
            "module.predictor.0.weight": 1 / Double(config.mocoDim).squareRoot(),
            "module.predictor.3.weight": 1 / Double(h).squareRoot(),
        ]
        for (name, bound) in bounds {
            let entry = try #require(parameters.table[name])
            #expect(parameters.initializationRule(for: entry) == .uniform(bound: Float(bound)), "\(name)")
            let tensor = values(ours, entry)
            let largest = Double(tensor.map(abs).max() ?? 0)
            #expect(largest <= bound && largest > 0.9 * bound, "\(name): max |w| \(largest), bound \(bound)")
            let spread = standardDeviation(tensor)
            let reference = standardDeviation(try file.floats("init." + name)[...])
            #expect(abs(spread / (bound / 3.0.squareRoot()) - 1) < 0.1, "\(name): std \(spread)")
            #expect(abs(spread / reference - 1) < 0.1, "\(name): std \(spread), PyTorch \(reference)")
        }
        // cls_token ~ normal(0, 1e-6): tiny, not zero.
        let cls = values(ours, try #require(parameters.table["module.base_encoder.cls_token"]))
        #expect(cls.allSatisfy { abs($0) < 6e-6 } && cls.contains { $0 != 0 })
        #expect(abs(standardDeviation(cls) / 1e-6 - 1) < 0.35, "cls std \(standardDeviation(cls))")
        // Biases 0; LayerNorm and BN γ 1, β 0; exactly as in the fixture for every constant tensor.
        for entry in parameters.table.entries {
            let rule = parameters.initializationRule(for: entry)
            guard rule == .zeros || rule == .ones else { continue }
            let reference = try file.floats("init." + entry.name)
            #expect(Array(values(ours, entry)) == reference, "\(entry.name)")
            #expect(rule == .zeros ? entry.name.hasSuffix(".bias") : entry.name.hasSuffix(".weight"), "\(entry.name)")
        }
        // BN buffers: running_mean 0, running_var 1, num_batches_tracked 0.
        for entry in parameters.buffers.entries {
            let expected: Float = entry.name.hasSuffix("running_var") ? 1 : 0
            #expect(values(buffers, entry).allSatisfy { $0 == expected }, "\(entry.name)")
            if entry.name.hasSuffix("num_batches_tracked") {
                #expect(try file.int64s("init." + entry.name) == [0])
            } else {
                #expect(try file.floats("init." + entry.name) == Array(values(buffers, entry)), "\(entry.name)")
            }
        }
        // Reproducible from the seed, and the seed matters.
        #expect(parameters.initialValues(seed: 1).parameters == ours)
        #expect(parameters.initialValues(seed: 2).parameters != ours)
    }

    @Test func momentumBlockIsAnAlignedCopyOfTheBaseBlock() throws {
        let (_, config) = try goldenTiny()
        let parameters = try MoCoParameters(config)
        let (base, predictor, momentum) = (parameters.baseEncoder, parameters.predictor, parameters.momentumEncoder)
        #expect(base.lowerBound == 0 && base.upperBound == predictor.lowerBound)
        #expect(predictor.upperBound == momentum.lowerBound && momentum.upperBound == parameters.table.count)
        #expect(parameters.trainableRegion == 0..<momentum.lowerBound)
        #expect(momentum.count == base.count)

        // The one-pass EMA: every base tensor's twin sits at the same offset within its block.
        let baseEntries = parameters.table.entries.filter { $0.name.hasPrefix(MoCoParameters.baseEncoderPrefix) }
        let momentumEntries = parameters.table.entries.filter { $0.name.hasPrefix(MoCoParameters.momentumEncoderPrefix) }
        #expect(baseEntries.count == momentumEntries.count)
        for entry in baseEntries {
            let twin = try #require(parameters.momentumCounterpart(of: entry), "\(entry.name)")
            #expect(twin.offset - momentum.lowerBound == entry.offset - base.lowerBound, "\(entry.name)")
            #expect(twin.shape == entry.shape && !twin.trainable, "\(entry.name)")
            #expect(base.contains(entry.offset) && entry.offset + entry.count <= base.upperBound)
        }
        for entry in parameters.table.entries where entry.name.hasPrefix(MoCoParameters.predictorPrefix) {
            #expect(predictor.contains(entry.offset) && entry.trainable, "\(entry.name)")
        }

        let (values, _) = parameters.initialValues(seed: 3)
        #expect(Array(values[base]) == Array(values[momentum]))
        #expect(values[predictor].contains { $0 != 0 })
    }

    @Test func segmentTableCoversExactlyTheTrainableTensors() throws {
        let (_, config) = try goldenTiny()
        for stopGrad in [false, true] {
            var moco = config
            moco.vit.stopGradConv1 = stopGrad
            let parameters = try MoCoParameters(moco)
            let segments = parameters.segmentTable()
            let trainable = parameters.table.entries.filter(\.trainable)
            #expect(segments.segments == trainable.map {
                SegmentTable.Segment(offset: $0.offset, count: $0.count, adapted: $0.shape.count > 1)
            })
            #expect(segments.extent <= parameters.trainableRegion.upperBound)
            #expect(segments.segments.reduce(0) { $0 + $1.count } == parameters.counts.trainable)
            let patch = try #require(parameters.table["module.base_encoder.patch_embed.proj.weight"])
            #expect(patch.trainable == !stopGrad)
            #expect(segments.segments.contains { $0.offset == patch.offset } == !stopGrad)
            // LARS adapts matrices and the conv/cls/pos tensors, never vectors (SPEC A.6).
            let bias = try #require(parameters.table["module.base_encoder.blocks.0.attn.qkv.bias"])
            #expect(segments.segments.first { $0.offset == bias.offset }?.adapted == false)
            // Frozen-capable tensors lead, so the trainable tensors form one run up to the momentum block.
            let runs = segments.contiguousRuns
            #expect(runs.count == 1 && runs[0].offset + runs[0].count == parameters.predictor.upperBound,
                    "\(runs.count) runs")
        }
    }

    @Test func vitBatchNormAddsNorm2BuffersAndKeepsParameterNames() throws {
        let (_, config) = try goldenTiny()
        var moco = config
        moco.vit.mlpNormalization = .batchNorm
        let withBN = try MoCoParameters(moco)
        let reference = try MoCoParameters(config)
        #expect(withBN.table.entries == reference.table.entries)
        let C = config.vit.embedDim
        for encoder in [MoCoParameters.baseEncoderPrefix, MoCoParameters.momentumEncoderPrefix] {
            for block in 0..<config.vit.depth {
                let prefix = "\(encoder)blocks.\(block).norm2."
                #expect(withBN.buffers[prefix + "running_mean"]?.shape == [C])
                #expect(withBN.buffers[prefix + "running_var"]?.shape == [C])
                #expect(withBN.buffers[prefix + "num_batches_tracked"]?.shape == [])
            }
        }
        #expect(withBN.buffers.entries.count == reference.buffers.entries.count + 2 * config.vit.depth * 3)

        moco = config
        moco.vit.positionEmbedding = .none
        let noPosition = try MoCoParameters(moco)
        #expect(noPosition.table["module.base_encoder.pos_embed"] == nil)
        #expect(noPosition.counts.total == reference.counts.total - 2 * config.vit.tokens * C)
    }
}
