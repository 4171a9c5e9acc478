import Kernels
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
