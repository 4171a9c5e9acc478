import Augment
import Datasets
import Foundation
import Model
import Tensors
import Testing
import TestSupport
import Train

/// `count` blank RGB images of `side` pixels in `classes` classes: a dataset that lets a trainer
/// be built (the golden tests feed their own batches).
struct BlankDataset: ImageDataset {
    let count: Int
    let side: Int
    let classNames: [String]
    init(count: Int, side: Int, classes: Int) {
        self.count = count
        self.side = side
        classNames = (0..<classes).map { "class\($0)" }
    }
    func label(at index: Int) -> Int? { index % classNames.count }
    func image(at index: Int) throws -> Image {
        Image(width: side, height: side, channels: 3, pixels: [UInt8](repeating: UInt8(index % 256), count: side * side * 3))
    }
    var summary: String { "blank: \(count) images" }
}

/// Fine-tuning's step against an independent PyTorch implementation (tools/golden.py
/// --finetune): mixup (λ 0.7) then cutmix (a fixed box) with label smoothing 0.1, drop path in
/// block 1 with fixed per-sample factors, the soft-target cross-entropy, the backward through the
/// head into the trunk, and AdamW with timm's no-decay group, two steps.
@Suite struct FineTuneGoldenTests {
    func run(on backend: any Backend, fixture: String = "golden_finetune") throws {
        let golden = try fixtureFile(fixture)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("mocov3-ft-golden-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        // The fixture's trunk as a timm-named file with its configuration.
        var writer = SafetensorsWriter(metadata: ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"]
            .reduce(into: [:]) { $0[$1] = golden.metadata[$1]! })
        for entry in golden.entries where entry.name.hasPrefix("trunk.") {
            let name = String(entry.name.dropFirst(6))
            if entry.dtype == .int64 {
                try writer.add(name, shape: entry.shape, int64s: try golden.int64s(entry.name))
            } else {
                try writer.add(name, shape: entry.shape, floats: try golden.floats(entry.name))
            }
        }
        let trunkURL = folder.appendingPathComponent("trunk.safetensors")
        try writer.write(to: trunkURL)

        var configuration = FineTuneConfiguration()
        configuration.pretrained = trunkURL.path
        configuration.batchSize = 4
        configuration.weightDecay = 0.05
        configuration.dropPath = 0.1
        let data = DatasetSplits(train: BlankDataset(count: 8, side: 16, classes: 10),
                                 test: BlankDataset(count: 4, side: 16, classes: 10), name: "blank")
        let tuner = try FineTuner(configuration: configuration, backend: backend, data: data,
                                  runFolder: folder.appendingPathComponent("run"), workers: 1) { _ in }
        #expect(configuration.dropPathRates(depth: 2) == [0, 0.1])
        try tuner.head.load(weight: try golden.floats("head_init.weight"), bias: [Float](repeating: 0, count: 10))

        let x = try golden.floats("x")
        let labels = try golden.int64s("y").map { Int32($0) }
        let mixup = Mixup(mixupAlpha: 0.8, cutmixAlpha: 1, switchProbability: 0.5, smoothing: 0.1, classes: 10)
        let draws: [Mixup.Draw] = [.mixup(lambda: 0.7), .cutmix(lambda: 1 - 64.0 / 256, top: 3, bottom: 11, left: 2, right: 10)]
        let dropPath = DropPath(attention: [nil, try backend.makeTensor(try golden.floats("drop.attn"), shape: [4])],
                                mlp: [nil, try backend.makeTensor(try golden.floats("drop.mlp"), shape: [4])])
        for (step, draw) in draws.enumerated() {
            var images = x
            let targets = mixup.apply(draw, images: &images, labels: labels, imageSize: 16)
            expectClose(images, try golden.floats("step\(step).x"), relative: 1e-6, absolute: 1e-6, "mixed images of step \(step)")
            expectClose(targets, try golden.floats("step\(step).targets"), relative: 1e-6, absolute: 1e-7, "targets of step \(step)")
            let loss = try tuner.trainStep(images: try golden.floats("step\(step).x"), targets: try golden.floats("step\(step).targets"),
                                           dropPath: dropPath, learningRate: step == 0 ? 1e-3 : 8e-4, step: step + 1)
            expectClose([loss], try golden.floats("step\(step).loss"), relative: 1e-5, absolute: 1e-6, "loss of step \(step)")
            if step == 0 {
                // The gradients of the first step, through the head into every trainable trunk tensor.
                let trunkGradients = try backend.download(tuner.trunk.gradientTensor)
                for entry in tuner.trunk.layout.table.entries where entry.trainable {
                    expectClose(Array(trunkGradients[entry.offset..<(entry.offset + entry.count)]),
                                try golden.floats("step0.grad.\(entry.name)"), relative: 1e-4, absolute: 1e-6, "grad \(entry.name)")
                }
                #expect(!tuner.trunk.layout.table["pos_embed"]!.trainable)
                let headGradients = try backend.download(tuner.head.gradientTensor)
                for entry in tuner.head.table.entries {
                    expectClose(Array(headGradients[entry.offset..<(entry.offset + entry.count)]),
                                try golden.floats("step0.grad.\(entry.name)"), relative: 1e-5, absolute: 1e-6, "grad \(entry.name)")
                }
            }
        }
        // Final weights as in GoldenStepTests: AdamW's first updates are ±lr for any gradient above its
        // ε, so elements whose gradient is float32 noise walk by up to lr per step on each side. The
        // bulk: rtol 1e-4, atol 1e-4 (a tenth of the lr). The K third of every attn.qkv.bias has an
        // analytically zero gradient (softmax ignores a constant added to a row's logits): within 2·Σlr.
        let parameters = try backend.download(tuner.trunk.parameterTensor)
        let C = tuner.trunk.layout.config.embedDim
        for entry in tuner.trunk.layout.table.entries where entry.trainable {
            let actual = Array(parameters[entry.offset..<(entry.offset + entry.count)])
            let expected = try golden.floats("final.\(entry.name)")
            var tight = Array(0..<entry.count), loose: [Int] = []
            if entry.name.hasSuffix("attn.qkv.bias") { (tight, loose) = (Array(0..<C) + Array(2 * C..<3 * C), Array(C..<2 * C)) }
            expectClose(tight.map { actual[$0] }, tight.map { expected[$0] }, relative: 1e-4, absolute: 1e-4, "final \(entry.name)")
            expectClose(loose.map { actual[$0] }, loose.map { expected[$0] }, relative: 0, absolute: 2 * 1.8e-3 + 1e-6,
                        "final \(entry.name) (zero-gradient elements)")
        }
        // ViT-BN: norm2 ran on the batch's statistics and moved its running ones, as torch's train mode.
        if golden.metadata["vit_bn"] == "1" {
            #expect(tuner.trunk.layout.config.mlpNormalization == .batchNorm)
            let buffers = try backend.download(tuner.trunk.bufferTensor)
            for entry in tuner.trunk.layout.buffers.entries where !entry.name.hasSuffix("num_batches_tracked") {
                expectClose(Array(buffers[entry.offset..<(entry.offset + entry.count)]), try golden.floats("final.\(entry.name)"),
                            relative: 1e-4, absolute: 1e-5, "final \(entry.name)")
            }
        }
        let head = try tuner.head.values()
        expectClose(head.weight, try golden.floats("final.head.weight"), relative: 1e-4, absolute: 1e-4, "final head.weight")
        expectClose(head.bias, try golden.floats("final.head.bias"), relative: 1e-4, absolute: 1e-4, "final head.bias")
    }

    @Test func hostMatchesTheGoldenFineTuningSteps() throws { try run(on: HostBackend()) }
    @Test func hostMatchesTheGoldenViTBNFineTuningSteps() throws { try run(on: HostBackend(), fixture: "golden_finetune_vitbn") }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func openCLMatchesTheGoldenFineTuningSteps() throws {
        try run(on: TestDevices.backend())
        try run(on: TestDevices.backend(), fixture: "golden_finetune_vitbn")
    }
}
