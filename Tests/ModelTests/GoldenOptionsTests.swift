import Foundation
import Tensors
import Model
import Testing
import TestSupport

/// The paper's ablation options against tools/golden.py's independent PyTorch runs
/// (`--pooling avg`, `--vit-bn`; Fixtures/README.md): names and shapes of every tensor and BN
/// buffer, step 0's outputs and gradients, and three AdamW steps, with the tolerances of the
/// reference fixture's tests.
@Suite struct GoldenOptionsTests {
    static let fixtures = ["golden_small_avgpool", "golden_small_vitbn"]

    /// Every `init.*` tensor of the fixture is a parameter or buffer of ours and the other way
    /// round (ViT-BN: `blocks.{i}.norm2.{running_mean, running_var, num_batches_tracked}`).
    @Test(arguments: fixtures)
    func namesMatchTheGoldenCheckpoint(_ fixture: String) throws {
        let (file, config) = try goldenFixture(fixture)
        let layout = try MoCoParameters(config)
        let ours = Set(layout.table.entries.map(\.name) + layout.buffers.entries.map(\.name))
        let theirs = Set(file.names.filter { $0.hasPrefix("init.") }.map { String($0.dropFirst("init.".count)) })
        #expect(ours == theirs, "only ours: \(ours.subtracting(theirs).sorted()); only torch: \(theirs.subtracting(ours).sorted())")
        #expect((config.vit.pooling == .globalAverage) == fixture.contains("avgpool"))
        #expect((config.vit.mlpNormalization == .batchNorm) == fixture.contains("vitbn"))
    }

    /// `Checkpoint` reads the options from the same metadata keys, writes them back only where
    /// set, and rejects values it does not know.
    @Test(arguments: fixtures)
    func checkpointMetadataCarriesTheOptions(_ fixture: String) throws {
        let (file, config) = try goldenFixture(fixture)
        let loaded = try Checkpoint.config(from: file, temperature: config.temperature)
        #expect(loaded == config)
        let written = Checkpoint.metadata(for: loaded)
        for key in Checkpoint.optionKeys { #expect(written[key] == file.metadata[key], "\(key)") }
        #expect(Checkpoint.metadata(for: try goldenTiny().config).keys.filter(Checkpoint.optionKeys.contains).isEmpty)

        for (key, value) in [("pooling", "mean"), ("vit_bn", "yes")] {
            var metadata = written
            metadata[key] = value
            let url = FileManager.default.temporaryDirectory
                .appendingPathComponent("mocov3-options-\(fixture)-\(key)-\(ProcessInfo.processInfo.processIdentifier).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try SafetensorsWriter.write(tensors: [("x", [1], [0])], metadata: metadata, to: url)
            let message = configErrorMessage { _ = try Checkpoint.config(from: try SafetensorsFile(contentsOf: url), temperature: 0.2) }
            #expect(message?.contains("\"\(key)\"") == true, "\(message ?? "no error")")
        }
    }

    @Test(arguments: fixtures)
    func hostForwardMatchesTheGoldenStep0(_ fixture: String) throws {
        try checkGoldenForward(on: HostBackend(), fixture: fixture)
    }

    @Test(arguments: fixtures)
    func hostGradientsMatchTheGoldenStep0(_ fixture: String) throws {
        try checkGoldenGradients(on: HostBackend(), fixture: fixture)
    }

    @Test(arguments: fixtures)
    func hostStepsMatchTheGoldenRun(_ fixture: String) throws {
        try checkGoldenSteps(on: HostBackend(), fixture: fixture)
    }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), arguments: fixtures)
    func openCLStepsMatchTheGoldenRun(_ fixture: String) throws {
        try checkGoldenSteps(on: try TestDevices.backend(), fixture: fixture)
    }
}
