import Foundation
import Testing
@testable import Train

@Suite struct ScheduleTests {
    let schedules = Schedules(baseLearningRate: 1.5e-4, batchSize: 1024, warmupEpochs: 40, epochs: 300,
                              baseMomentum: 0.99, cosineMomentum: true)

    @Test func learningRateWarmsUpLinearlyFromZeroThenFollowsAHalfCosine() {
        #expect(schedules.peakLearningRate == 6e-4)                       // SPEC A.6: 6e-4 at batch 1024
        #expect(schedules.learningRate(at: 0) == 0)
        #expect(abs(schedules.learningRate(at: 10) - 1.5e-4) < 1e-15)
        #expect(abs(schedules.learningRate(at: 40) - 6e-4) < 1e-15)
        #expect(abs(schedules.learningRate(at: 170) - 3e-4) < 1e-12)      // half way down the cosine
        #expect(schedules.learningRate(at: 300) < 1e-15)
    }

    @Test func momentumRisesFromItsBaseToOneAlongACosine() {
        #expect(schedules.momentum(at: 0) == 0.99)
        #expect(abs(schedules.momentum(at: 150) - 0.995) < 1e-12)
        #expect(abs(schedules.momentum(at: 300) - 1) < 1e-12)
        let constant = Schedules(baseLearningRate: 1, batchSize: 256, warmupEpochs: 0, epochs: 10, baseMomentum: 0.996,
                                 cosineMomentum: false)
        #expect(constant.momentum(at: 7.3) == 0.996)
    }
}

@Suite struct ConfigurationValidationTests {
    func rejection(_ change: (inout PretrainConfiguration) -> Void) -> String {
        var c = PretrainConfiguration.defaultRun
        change(&c)
        do { try c.validate() } catch { return "\(error)" }
        return "accepted"
    }

    @Test func theDefaultRunIsValid() throws { try PretrainConfiguration.defaultRun.validate() }

    @Test func impossibleValuesAreRejectedWithTheFlagAndTheReason() {
        #expect(rejection { $0.batchSize = 0 }.contains("-b/--batch-size must be at least 2"))
        #expect(rejection { $0.lr = -1 }.contains("--lr must be a finite number ≥ 0"))
        #expect(rejection { $0.patchSize = 5 }.contains("--patch-size 5 must divide --image-size 28"))
        #expect(rejection { $0.heads = 5 }.contains("heads (5) must divide the width"))
        #expect(rejection { $0.warmupEpochs = Double($0.epochs) }.contains("--warmup-epochs must lie in 0..<epochs"))
        #expect(rejection { $0.epochs = 0 }.contains("--epochs must be at least 1"))
        #expect(rejection { $0.mocoM = 1.5 }.contains("--moco-m must lie in [0, 1]"))
        #expect(rejection { $0.mocoT = 0 }.contains("--moco-t must be a positive number"))
        #expect(rejection { $0.cropMin = 0 }.contains("--crop-min must lie in (0, 1]"))
        #expect(rejection { $0.arch = "vit_giant" }.contains("vit_giant"))
        #expect(rejection { $0.batchSize = 1 << 40 }.contains("-b/--batch-size 1099511627776 is larger than this tool supports"))
        #expect(rejection { $0.knnBank = 1 << 40 }.contains("--knn-bank"))
        #expect(rejection { $0.lr = 1e308 }.contains("is not a finite number"))
        #expect(rejection { $0.imageSize = 8192; $0.patchSize = 1 }.contains("too large to allocate"))
        #expect(rejection { $0.blurScale = 0 }.contains("--blur-scale must be a positive factor"))
        #expect(rejection { $0.blurScale = .nan }.contains("--blur-scale must be a positive factor"))
    }

    /// A configuration written before `blurScale` existed (a checkpoint of an earlier version)
    /// still reads, as the reference's blur.
    @Test func aConfigurationWithoutTheBlurScaleReads() throws {
        var c = TinyRun.configuration
        c.blurScale = 0.5
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as? [String: Any])
        #expect(object["blurScale"] as? Double == 0.5)
        object["blurScale"] = nil
        let decoded = try JSONDecoder().decode(PretrainConfiguration.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(decoded.blurScale == nil)
        c.blurScale = nil
        #expect(decoded == c)
    }

    @Test func configurationRoundTripsThroughJSON() throws {
        let c = TinyRun.configuration
        let decoded = try JSONDecoder().decode(PretrainConfiguration.self, from: JSONEncoder().encode(c))
        #expect(decoded == c)
    }
}
