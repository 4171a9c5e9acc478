import Foundation
import Model
import Tensors
import Testing
import TestSupport
import Train

/// A fixture by name.
func fixtureFile(_ name: String) throws -> SafetensorsFile {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures"))
    return try SafetensorsFile(contentsOf: url)
}

/// `file` rewritten to a temporary file: each tensor under `rename(name)` (nil drops it), plus
/// `extra` tensors, with `metadata`; as a user's tool would have written it.
func rewritten(_ file: SafetensorsFile, metadata: [String: String], extra: [(String, [Int], [Float])] = [],
               rename: (String) -> String?) throws -> SafetensorsFile {
    var writer = SafetensorsWriter(metadata: metadata)
    for entry in file.entries {
        guard let name = rename(entry.name) else { continue }
        if entry.dtype == .int64 {
            try writer.add(name, shape: entry.shape, int64s: try file.int64s(entry.name))
        } else {
            try writer.add(name, shape: entry.shape, floats: try file.floats(entry.name))
        }
    }
    for (name, shape, values) in extra { try writer.add(name, shape: shape, floats: values) }
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("mocov3-test-\(UUID().uuidString).safetensors")
    try writer.write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    return try SafetensorsFile(data: try Data(contentsOf: url), source: url.path)
}

/// The golden_lincls trunk as a plain timm-named file, with `metadata` (nil: the fixture's own keys).
func linclsTrunkFile(metadata: [String: String]? = nil, drop: Set<String> = [],
                     extra: [(String, [Int], [Float])] = []) throws -> SafetensorsFile {
    let golden = try fixtureFile("golden_lincls")
    let keys = ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"]
    let own = Dictionary(uniqueKeysWithValues: keys.map { ($0, golden.metadata[$0]!) })
    return try rewritten(golden, metadata: metadata ?? own, extra: extra) { name in
        guard name.hasPrefix("trunk.") else { return nil }
        let plain = String(name.dropFirst(6))
        return drop.contains(plain) ? nil : plain
    }
}

@Suite struct PretrainedViTTests {
    /// A timm ViT written by timm itself (tools/timm_vit.py): no metadata, 2 heads, a learned
    /// position embedding and a 10-class head. Our features and logits equal timm's.
    @Test func timmFileImportsWithHeadsAndMatchesTimmsFeatures() throws {
        let file = try fixtureFile("timm_vit")
        let vit = try PretrainedViT(file: file, heads: 2)
        let config = vit.layout.config
        #expect(vit.origin == .timm)
        #expect((config.imageSize, config.patchSize, config.embedDim, config.depth, config.heads, config.mlpRatio)
                == (16, 4, 64, 2, 2, 4))
        let head = try #require(vit.head)
        #expect(head.classes == 10)

        let expected = try fixtureFile("timm_vit_expected")
        let x = try expected.floats("x")
        let backend = HostBackend()
        let parameters = try backend.makeTensor(vit.parameters, shape: [vit.parameters.count])
        let extractor = try FeatureExtractor(layout: vit.layout, parameterTensor: parameters, backend: backend, batchSize: 5)
        expectClose(try extractor.features(of: x, count: 5), try expected.floats("features"), relative: 1e-5,
                    absolute: 1e-5, "features vs timm")
        let classifier = try ClassifierHead(backend: backend, width: 64, classes: 10, batchSize: 5, batchNorm: false)
        try classifier.load(weight: head.weight, bias: head.bias)
        let logits = try classifier.logits(features: try extractor.featureTensor(of: x, count: 5), count: 5)
        expectClose(logits, try expected.floats("logits"), relative: 1e-5, absolute: 1e-5, "logits vs timm")
    }

    @Test func timmFileWithoutHeadsSaysWhyHeadsAreNeeded() throws {
        let file = try fixtureFile("timm_vit")
        expectError(["--heads", "12 heads", "timm's vit_small 6"]) { _ = try PretrainedViT(file: file) }
        expectError(["heads (3) must divide"]) { _ = try PretrainedViT(file: file, heads: 3) }
    }

    @Test func metadataIsReadLenientlyAndHeadsMayNotContradictIt() throws {
        let file = try linclsTrunkFile(metadata: ["img_size": "16", "patch_size": "4.0", "embed_dim": "64", "depth": "2",
                                                  "num_heads": "4", "mlp_ratio": "4.0", "vit_bn": "False",
                                                  "stop_grad_conv1": "True"])
        let vit = try PretrainedViT(file: file)
        #expect(vit.layout.config.mlpRatio == 4 && vit.layout.config.patchSize == 4)
        #expect(vit.layout.config.mlpNormalization == .layerNorm)
        #expect(MetadataValue.flag("True") == true && MetadataValue.flag("1") == true && MetadataValue.flag("false") == false)
        #expect(MetadataValue.flag("yes") == nil && MetadataValue.integer("4.5") == nil && MetadataValue.integer("4.0") == 4)
        expectError(["--heads 2 contradicts", "num_heads 4"]) { _ = try PretrainedViT(file: file, heads: 2) }
        let bad = try linclsTrunkFile(metadata: ["img_size": "16", "patch_size": "4", "embed_dim": "64", "depth": "2",
                                                 "num_heads": "4", "mlp_ratio": "four"])
        expectError(["mlp_ratio", "not an integer"]) { _ = try PretrainedViT(file: bad) }
    }

    /// A pretrain checkpoint (module.base_encoder.*, the projector and momentum encoder too)
    /// yields exactly the base encoder's trunk, and the same features bit for bit.
    @Test func pretrainCheckpointYieldsTheBaseEncodersTrunk() throws {
        let (golden, config) = try goldenFixture("golden_small_vitbn")
        let layout = try MoCoParameters(config)
        // The weights after the fixture's three steps: the ViT-BN running statistics have moved off 0 and 1.
        let values = try Checkpoint.initialValues(from: golden, layout: layout, prefix: "final.")
        // As a pretrain checkpoint stores it, without num_batches_tracked (PyTorch writes it, nothing reads it).
        var writer = SafetensorsWriter(metadata: Checkpoint.metadata(for: config).mapValues { $0 == "1" ? "true" : $0 })
        for entry in layout.table.entries {
            try writer.add(entry.name, shape: entry.shape, floats: Array(values.parameters[entry.offset..<(entry.offset + entry.count)]))
        }
        for entry in layout.buffers.entries where !entry.name.hasSuffix("num_batches_tracked") {
            try writer.add(entry.name, shape: entry.shape, floats: Array(values.buffers[entry.offset..<(entry.offset + entry.count)]))
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mocov3-pretrain-\(UUID().uuidString).safetensors")
        try writer.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let vit = try PretrainedViT(file: SafetensorsFile(contentsOf: url))
        #expect(vit.origin == .pretrain && vit.head == nil)
        #expect(vit.layout.config.mlpNormalization == .batchNorm)

        let backend = HostBackend()
        let x = Checkpoint.randomViews(config: config.vit, batchSize: 3, seed: 5).x1
        let mocoExtractor = try FeatureExtractor(
            layout: layout, parameterTensor: backend.makeTensor(values.parameters, shape: [values.parameters.count]),
            bufferTensor: backend.makeTensor(values.buffers, shape: [values.buffers.count]), backend: backend, batchSize: 3)
        let trunkExtractor = try FeatureExtractor(
            layout: vit.layout, parameterTensor: backend.makeTensor(vit.parameters, shape: [vit.parameters.count]),
            bufferTensor: backend.makeTensor(vit.buffers, shape: [vit.buffers.count]), backend: backend, batchSize: 3)
        #expect(try mocoExtractor.features(of: x, count: 3) == trunkExtractor.features(of: x, count: 3))
        #expect(vit.buffers.contains { $0 != 0 && $0 != 1 })
        let trunk = try vit.layout.baseEncoderTrunk(of: layout, parameters: values.parameters, buffers: values.buffers)
        #expect(vit.parameters == trunk.parameters)
        // num_batches_tracked was absent from the file: 0; the running statistics are the file's.
        let counts = vit.layout.buffers.entries.filter { $0.name.hasSuffix("num_batches_tracked") }.map { vit.buffers[$0.offset] }
        #expect(counts == [0, 0])
        for entry in vit.layout.buffers.entries where !entry.name.hasSuffix("num_batches_tracked") {
            let range = entry.offset..<(entry.offset + entry.count)
            #expect(vit.buffers[range] == trunk.buffers[range], "\(entry.name)")
        }
    }

    @Test func badFilesAreClearErrors() throws {
        expectError(["lacks 1 backbone tensor", "blocks.1.attn.proj.weight", "complete ViT"]) {
            _ = try PretrainedViT(file: try linclsTrunkFile(drop: ["blocks.1.attn.proj.weight"]))
        }
        expectError(["another architecture", "blocks.0.ls1.gamma", "LayerScale"]) {
            _ = try PretrainedViT(file: try linclsTrunkFile(extra: [("blocks.0.ls1.gamma", [64], [Float](repeating: 1, count: 64))]))
        }
        // Metadata of a 32-wide ViT over 64-wide tensors: the width is wrong, named with the tensor.
        let narrow = try linclsTrunkFile(metadata: ["img_size": "16", "patch_size": "4", "embed_dim": "32", "depth": "2",
                                                    "num_heads": "4", "mlp_ratio": "4"])
        expectError(["pos_embed", "[1, 17, 32]"]) { _ = try PretrainedViT(file: narrow) }
        let resnet = try rewritten(try fixtureFile("timm_vit"), metadata: [:],
                                   extra: [("conv1.weight", [2, 3, 1, 1], [Float](repeating: 0, count: 6))]) { _ in nil }
        expectError(["ResNet", "ViTs only"]) { _ = try PretrainedViT(file: resnet) }
        let empty = try rewritten(try fixtureFile("timm_vit"), metadata: [:],
                                  extra: [("weight", [2], [0, 1])]) { _ in nil }
        expectError(["no ViT trunk", "cls_token"]) { _ = try PretrainedViT(file: empty) }
    }
}
