import Collective
import Foundation
import Model
import Tensors
import Testing
import TestSupport
import Train

/// Data parallel against an independent PyTorch run (`tools/golden.py --data-parallel`):
/// DistributedDataParallel on 2 gloo processes, each with 4 of the 8 rows of both views, keys
/// all-gathered, SyncBN in every ViT-BN norm2, the projector and the predictor. Two ranks here
/// (threads, the collectives an MPI rank calls) train three AdamW steps from
/// `golden_small_vitbn`'s init: the global loss of each step, the all-reduced gradient of the
/// first and every weight and BN buffer after the third against PyTorch's, with the tolerances
/// of the one-process golden steps.
@Suite struct DataParallelGoldenTests {
    struct RankRun: @unchecked Sendable {
        var losses: [Float], gradient: [Float], parameters: [Float], buffers: [Float]
    }

    /// One all-reduce after the backward (0), and buckets of 256 bytes started during it.
    @Test(arguments: [0, 256]) func twoRanksMatchPyTorchDistributedDataParallel(bucketBytes: Int) throws {
        let runs = try ThreadGroup.run(2) { _, communicator in
            let setup = try GoldenStepSetup(on: HostBackend(), fixture: "golden_small_vitbn", run: "golden_dp_vitbn",
                                            communicator: communicator, bucketBytes: bucketBytes)
            var gradient: [Float] = []
            setup.trainingStep.afterUpdate = { model, step in
                if step == 1 { gradient = try model.backend.download(model.gradientTensor) }
            }
            let losses = try (1...3).map { try setup.step($0) }
            let backend = setup.model.backend
            return RankRun(losses: losses, gradient: gradient, parameters: try backend.download(setup.model.parameterTensor),
                           buffers: try backend.download(setup.model.bufferTensor))
        }
        let setup = try GoldenStepSetup(on: HostBackend(), fixture: "golden_small_vitbn", run: "golden_dp_vitbn")
        #expect(setup.file.metadata["ranks"] == "2")
        let label = "host 2 ranks, buckets \(bucketBytes) B"
        try expectGoldenGradients(runs[0].gradient, setup: setup, label: label)
        try expectGoldenRun(losses: runs[0].losses, parameters: runs[0].parameters, buffers: runs[0].buffers,
                            setup: setup, label: label)
        // The ranks apply the same all-reduced gradients: bitwise the same model.
        #expect(runs[0].parameters == runs[1].parameters && runs[0].buffers == runs[1].buffers)
        #expect(runs[0].losses == runs[1].losses)
    }
}
