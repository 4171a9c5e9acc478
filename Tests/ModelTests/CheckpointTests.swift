import Foundation
import Tensors
import Model
import Testing
import TestSupport
import Train

/// `Checkpoint`: the by-name loader and the step writer behind `mocov3-cl step`.
@Suite struct CheckpointTests {
    /// The golden fixture through the by-name loader (prefix detected), config from metadata.
    func fixtureModel(on backend: any Backend) throws -> (SafetensorsFile, MoCoModel, x1: Tensor, x2: Tensor) {
        let (file, _) = try goldenTiny()
        let config = try Checkpoint.config(from: file, temperature: 0.2)
        let layout = try MoCoParameters(config)
        #expect(Checkpoint.detectPrefix(in: file, layout: layout) == "init.")
        let batch = try #require(file.metadata["batch_size"].flatMap { Int($0) })
        let model = try MoCoModel(parameters: layout, backend: backend, batchSize: batch,
                                  initial: try Checkpoint.initialValues(from: file, layout: layout))
        let shape = [batch, config.vit.channels, config.vit.imageSize, config.vit.imageSize]
        return (file, model, try backend.makeTensor(try file.floats("x1", shape: shape), shape: shape),
                try backend.makeTensor(try file.floats("x2", shape: shape), shape: shape))
    }

    /// One step from the loaded weights reproduces step0.loss and two of step0's gradients
    /// (tolerances as GoldenStepTests).
    @Test func loadedFixtureReproducesTheGoldenStep0() throws {
        let backend = HostBackend()
        let (file, model, x1, x2) = try fixtureModel(on: backend)
        let loss = try adamWStep(model, x1, x2)
        expectClose([loss], try file.floats("step0.loss", shape: [1]), "step0.loss")
        for name in ["module.base_encoder.blocks.1.attn.qkv.weight", "module.predictor.3.weight"] {
            let entry = try #require(model.parameters.table[name])
            let expected = try file.floats("step0.grad." + name, shape: entry.shape)
            let actual = try backend.download(try model.gradient(named: name))
            expectClose(actual, expected, relative: 1e-4, absolute: 1e-5 + 1e-4 * magnitude(expected), "step0.grad.\(name)")
        }
    }

    /// The writer's file reads back: every output name, gradients, weights and buffers (I64
    /// num_batches_tracked), metadata; and it loads again as weights by plain name.
    @Test func stepOutputRoundTrips() throws {
        let backend = HostBackend()
        let (file, model, x1, x2) = try fixtureModel(on: backend)
        let loss = try adamWStep(model, x1, x2)
        let layout = model.parameters
        let writer = try Checkpoint.stepWriter(model: model, loss: loss, metadata: Checkpoint.metadata(for: layout.config))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("checkpoint-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try writer.write(to: url)

        let written = try SafetensorsFile(contentsOf: url)
        for key in Checkpoint.configurationKeys { #expect(written.metadata[key] == file.metadata[key], "\(key)") }
        #expect(try written.floats("loss", shape: [1]) == [loss])
        for name in ["q1", "q2", "k1", "k2"] {
            #expect(try written.floats(name, shape: [model.batchSize, layout.config.mocoDim]).count > 0)
        }
        let names = Set(written.names)
        for entry in layout.table.entries {
            #expect(names.contains(entry.name), "\(entry.name)")
            #expect(names.contains("grad." + entry.name) == entry.trainable, "grad.\(entry.name)")
        }
        let gradient = try backend.download(try model.gradient(named: "module.predictor.0.weight"))
        #expect(try written.floats("grad.module.predictor.0.weight") == gradient)
        let counter = "module.base_encoder.head.1.num_batches_tracked"
        #expect(try written.entry(named: counter).dtype == .int64)
        // Training-mode BN counts each forward: both views went through the base encoder once.
        #expect(try written.int64s(counter) == (try file.int64s("init." + counter)).map { $0 + 2 })

        // Back in as weights: plain names, same configuration, same values.
        #expect(Checkpoint.detectPrefix(in: written, layout: layout) == "")
        let reloaded = try Checkpoint.initialValues(from: written, layout: layout)
        #expect(reloaded.parameters == (try backend.download(model.parameterTensor)))
        #expect(reloaded.buffers == (try backend.download(model.bufferTensor)))
        #expect(try Checkpoint.config(from: written, temperature: 0.2) == layout.config)
    }

    @Test func missingAndMisshapedTensorsAreNamed() throws {
        let (_, config) = try goldenTiny()
        let layout = try MoCoParameters(config)
        let initial = layout.initialValues(seed: 1)
        func file(replacing name: String, with shape: [Int]?) throws -> SafetensorsFile {
            var writer = SafetensorsWriter(metadata: Checkpoint.metadata(for: config))
            for entry in layout.table.entries {
                if entry.name == name {
                    if let shape { try writer.add(name, shape: shape, floats: [Float](repeating: 0, count: shape.reduce(1, *))) }
                    continue
                }
                try writer.add(entry.name, shape: entry.shape,
                               floats: Array(initial.parameters[entry.offset..<(entry.offset + entry.count)]))
            }
            for entry in layout.buffers.entries {
                try writer.add(entry.name, shape: entry.shape,
                               floats: Array(initial.buffers[entry.offset..<(entry.offset + entry.count)]))
            }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("weights-\(UUID().uuidString).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try writer.write(to: url)
            return try SafetensorsFile(contentsOf: url)
        }
        let name = "module.base_encoder.blocks.1.mlp.fc1.bias"
        #expect(throws: SafetensorsError.self) { try Checkpoint.initialValues(from: try file(replacing: name, with: nil), layout: layout) }
        do {
            _ = try Checkpoint.initialValues(from: try file(replacing: name, with: nil), layout: layout)
        } catch {
            #expect("\(error)".contains(name), "\(error)")
        }
        do {
            _ = try Checkpoint.initialValues(from: try file(replacing: name, with: [3]), layout: layout)
            Issue.record("a mis-shaped \(name) was accepted")
        } catch {
            #expect("\(error)".contains(name) && "\(error)".contains("[3]"), "\(error)")
        }
        // A complete file (float num_batches_tracked) loads.
        let complete = try Checkpoint.initialValues(from: try file(replacing: "", with: nil), layout: layout)
        #expect(complete.parameters == initial.parameters && complete.buffers == initial.buffers)
    }

    /// The numbers `mocov3-cl step -a vit_small --image-size 224 --patch-size 16 --stop-grad-conv1
    /// --dry-run` prints (SPEC A.2, A.3).
    @Test func dryRunSummaryOfViTSmall() throws {
        var vit = try ViTConfig.named("vit_small")
        vit.stopGradConv1 = true
        let lines = try MoCoParameters(MoCoConfig(vit: vit)).summary(batchSize: 128)
        #expect(lines.contains { $0.contains("backbone") && $0.contains("21.67 M") }, "\(lines)")
        #expect(lines.contains { $0.contains("trainable") && $0.contains("42.82 M") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("  total") && $0.contains("GiB") }, "\(lines)")
        let base = try MoCoParameters(MoCoConfig(vit: try ViTConfig.named("vit_base"))).summary(batchSize: 128)
        #expect(base.contains { $0.contains("backbone") && $0.contains("85.80 M") }, "\(base)")
    }
}

/// One AdamW step (lr 1e-3, wd 0.1, m 0.99) from a fresh state: what `mocov3-cl step` runs.
func adamWStep(_ model: MoCoModel, _ x1: Tensor, _ x2: Tensor) throws -> Float {
    let optimizer = try AdamW(backend: model.backend, segments: model.trainableSegments, weightDecay: 0.1)
    return try MoCoTrainingStep(model: model, optimizer: optimizer)(x1: x1, x2: x2, learningRate: 1e-3, momentum: 0.99,
                                                                   step: 1).loss
}
