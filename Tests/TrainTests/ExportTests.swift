import Augment
import Datasets
import Foundation
import Model
import Tensors
import Testing
import TestSupport
@testable import Train

@Suite struct ExportTests {
    /// A one-epoch tiny pre-training run's checkpoint (ViT-BN when asked), in `folder`.
    func pretrainCheckpoint(in folder: URL, vitBN: Bool = false) throws -> URL {
        var configuration = TinyRun.configuration
        configuration.epochs = 1
        configuration.warmupEpochs = 0.5
        configuration.evalEvery = 0
        configuration.vitBN = vitBN
        let trainer = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2) { _ in }
        _ = try trainer.run()
        return folder.appendingPathComponent("checkpoint_0001.safetensors")
    }

    @Test func timmExportHoldsExactlyTheBackboneUnderTimmNames() throws {
        let folder = try TinyRun.folder("export-timm")
        defer { try? FileManager.default.removeItem(at: folder) }
        let checkpoint = try pretrainCheckpoint(in: folder)
        let output = folder.appendingPathComponent("vit.safetensors")
        let result = try WeightsExport.export(checkpoint: checkpoint, format: .timm, to: output)
        #expect(result.notes.isEmpty)
        let file = try SafetensorsFile(contentsOf: output)
        let layout = try ViTLayout(try TinyRun.configuration.modelConfig().vit)
        #expect(Set(file.names) == Set(layout.table.entries.map(\.name)))
        #expect(file.names.contains("pos_embed") && !file.names.contains { $0.hasPrefix("head") || $0.hasPrefix("module.") })
        for key in ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"] { #expect(file.metadata[key] != nil, "\(key)") }
        #expect(file.metadata["num_heads"] == "2")
        // pos_embed keeps its zero class-token row; the round trip gives the base encoder's trunk.
        #expect(try file.floats("pos_embed").prefix(16).allSatisfy { $0 == 0 })
        let original = try PretrainedViT(file: SafetensorsFile(contentsOf: checkpoint))
        let exported = try PretrainedViT(file: file)
        #expect(exported.parameters == original.parameters && exported.origin == .timm)
        // The momentum encoder on request, which differs from the base after a step.
        let momentumOutput = folder.appendingPathComponent("momentum.safetensors")
        _ = try WeightsExport.export(checkpoint: checkpoint, format: .timm, momentumEncoder: true, to: momentumOutput)
        let momentum = try PretrainedViT(file: SafetensorsFile(contentsOf: momentumOutput))
        let expected = try PretrainedViT(file: SafetensorsFile(contentsOf: checkpoint), prefix: MoCoParameters.momentumEncoderPrefix)
        #expect(momentum.parameters == expected.parameters && momentum.parameters != exported.parameters)
        // Nothing is overwritten by surprise.
        expectError(["exists; pass --force"]) { _ = try WeightsExport.export(checkpoint: checkpoint, format: .timm, to: output) }
        #expect(try WeightsExport.export(checkpoint: checkpoint, format: .timm, to: output, overwrite: true).tensors == file.names.count)
    }

    /// A lincls checkpoint exports with its trained head, as timm's classifier names it.
    @Test func classifierExportKeepsTheHead() throws {
        let folder = try TinyRun.folder("export-head")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = ProbeFixture.configuration(trunk: try ProbeFixture.trunkFile(in: folder))
        configuration.epochs = 1
        configuration.cachedFeatures = true
        let probe = try ProbeFixture.probe(configuration, folder: folder.appendingPathComponent("run"))
        _ = try probe.run()
        let output = folder.appendingPathComponent("classifier.safetensors")
        _ = try WeightsExport.export(checkpoint: folder.appendingPathComponent("run/checkpoint.safetensors"), format: .timm, to: output)
        let file = try SafetensorsFile(contentsOf: output)
        #expect(try file.floats("head.weight", shape: [4, 16]) == probe.head.values().weight)
        #expect(!file.names.contains { $0.hasPrefix("optimizer.") || $0.hasPrefix("head_norm") })
    }

    @Test func mocoExportKeepsEveryModuleTensorAndOptionsAreNoted() throws {
        let folder = try TinyRun.folder("export-moco")
        defer { try? FileManager.default.removeItem(at: folder) }
        let checkpoint = try pretrainCheckpoint(in: folder, vitBN: true)
        let output = folder.appendingPathComponent("moco.safetensors")
        _ = try WeightsExport.export(checkpoint: checkpoint, format: .moco, to: output)
        let source = try SafetensorsFile(contentsOf: checkpoint), file = try SafetensorsFile(contentsOf: output)
        #expect(Set(file.names) == Set(source.names.filter { $0.hasPrefix("module.") }))
        #expect(try file.entry(named: "module.base_encoder.head.1.num_batches_tracked").dtype == .int64)
        let layout = try MoCoParameters(try Checkpoint.config(from: file, temperature: 0.2))
        let (a, b) = (try Checkpoint.initialValues(from: file, layout: layout), try Checkpoint.initialValues(from: source, layout: layout))
        #expect(a.parameters == b.parameters && a.buffers == b.buffers)
        // ViT-BN cannot be expressed by timm's ViT: said in the result and the file, and the running statistics are written.
        let timm = folder.appendingPathComponent("vitbn.safetensors")
        let result = try WeightsExport.export(checkpoint: checkpoint, format: .timm, to: timm)
        #expect(result.notes.count == 1 && result.notes[0].contains("ViT-BN"))
        let timmFile = try SafetensorsFile(contentsOf: timm)
        #expect(timmFile.metadata["mocov3_notes"]?.contains("ViT-BN") == true && timmFile.metadata["vit_bn"] == "1")
        #expect(timmFile.names.contains("blocks.0.norm2.running_var"))
        // --format moco needs a pretrain checkpoint; a missing folder is an error naming the path.
        expectError(["holds no module.* tensors", "--format timm"]) {
            _ = try WeightsExport.export(checkpoint: timm, format: .moco, to: folder.appendingPathComponent("x.safetensors"))
        }
        expectError(["/no/such/folder/out.safetensors"]) {
            _ = try WeightsExport.export(checkpoint: checkpoint, format: .timm, to: URL(fileURLWithPath: "/no/such/folder/out.safetensors"))
        }
        expectError(["metrics.jsonl", "not a safetensors file"]) {
            _ = try WeightsExport.export(checkpoint: folder.appendingPathComponent("metrics.jsonl"), format: .timm,
                                         to: folder.appendingPathComponent("y.safetensors"))
        }
    }

    @Test func embeddingsHoldEveryImagesFeatureLabelAndIndex() throws {
        let folder = try TinyRun.folder("embed")
        defer { try? FileManager.default.removeItem(at: folder) }
        let vit = try PretrainedViT(file: SafetensorsFile(contentsOf: try ProbeFixture.trunkFile(in: folder)))
        let backend = HostBackend()
        let extractor = try FeatureExtractor(layout: vit.layout, parameterTensor: backend.makeTensor(vit.parameters, shape: [vit.parameters.count]),
                                             backend: backend, batchSize: 5)
        let dataset = TinyDataset(count: 12, seed: 2, failing: [4])
        var calls = 0
        let result = try Embeddings.compute(extractor: extractor, dataset: dataset, keepInputs: 3, workers: 2) { _, _ in calls += 1 }
        #expect(result.indices == [0, 1, 2, 3] + Array(5..<12) && result.skipped.count == 1 && calls == 3)
        #expect(result.labels == result.indices.map { Int32($0 % 4) })
        // Each row is the feature of its image alone, as one-image batches give it.
        let single = try FeatureExtractor(layout: vit.layout, parameterTensor: backend.makeTensor(vit.parameters, shape: [vit.parameters.count]),
                                          backend: backend, batchSize: 1)
        let seventh = try single.features(of: EvalTransform(imageSize: 8)(try dataset.image(at: 7)), count: 1)
        expectClose(Array(result.features[(6 * 16)..<(7 * 16)]), seventh, relative: 1e-6, absolute: 1e-6, "row of image 7")
        let url = folder.appendingPathComponent("features.safetensors")
        try Embeddings.write(result, config: vit.layout.config, dataset: dataset, metadata: ["source": "test"], to: url)
        let file = try SafetensorsFile(contentsOf: url)
        #expect(try file.entry(named: "features").shape == [11, 16] && file.entry(named: "inputs").shape == [3, 3, 8, 8])
        #expect(try file.int64s("indices") == result.indices.map(Int64.init))
        #expect(file.metadata["classes"] == "[\"a\",\"b\",\"c\",\"d\"]")
    }
}
