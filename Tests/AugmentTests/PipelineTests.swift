import Datasets
import Tensors
import Testing
import TestSupport
@testable import Augment

@Suite struct PipelineTests {
    /// Counts how often each optional step fired over `draws` samples of view `view`.
    func rates(view: Int, draws: Int = 2000) -> (jitter: Double, grayscale: Double, blur: Double, solarize: Double, flip: Double) {
        let augmentation = MoCoAugmentation(imageSize: 8, cropMin: 0.08)
        let image = FloatImage(randomImage(width: 10, height: 9, channels: 3, seed: 1))
        var counts = [0, 0, 0, 0, 0]
        for index in 0..<draws {
            var generator = AugmentationSeed.generator(seed: 42, epoch: 0, index: index, view: view)
            let (_, record) = augmentation.pipelines[view].prepared(image, using: &generator)
            if record.jitter != nil { counts[0] += 1 }
            if record.grayscale { counts[1] += 1 }
            if let sigma = record.blurSigma {
                counts[2] += 1
                #expect(sigma >= 0.1 && sigma <= 2.0)
            }
            if record.solarize { counts[3] += 1 }
            if record.flip { counts[4] += 1 }
        }
        let r = counts.map { Double($0) / Double(draws) }
        return (r[0], r[1], r[2], r[3], r[4])
    }

    /// Four binomial standard deviations: a correct pipeline fails about once in 15,000 runs,
    /// and since the draws are seeded, never on a given build.
    func expectRate(_ rate: Double, _ p: Double, draws: Int = 2000, _ name: String,
                    sourceLocation: SourceLocation = #_sourceLocation) {
        let tolerance = 4 * (p * (1 - p) / Double(draws)).squareRoot()
        #expect(abs(rate - p) <= tolerance, "\(name): rate \(rate), expected \(p) ± \(tolerance)",
                sourceLocation: sourceLocation)
    }

    @Test func viewOneAlwaysBlursNeverSolarizes() {
        let r = rates(view: 0)
        #expect(r.blur == 1)
        #expect(r.solarize == 0)
        expectRate(r.jitter, 0.8, "jitter")
        expectRate(r.grayscale, 0.2, "grayscale")
        expectRate(r.flip, 0.5, "flip")
    }

    /// The reference blurs 224 px views with σ in 0.1–2.0 px; `blurScale` scales that range for
    /// smaller views (28/224 for Fashion-MNIST) and the blur applied follows it.
    @Test func theBlurScaleScalesTheSigmaRange() {
        #expect(MoCoAugmentation(imageSize: 28).pipelines.map(\.blurSigma) == [0.1...2.0, 0.1...2.0])
        let scaled = MoCoAugmentation(imageSize: 28, blurScale: 0.125)
        #expect(scaled.pipelines.map(\.blurSigma) == [0.0125...0.25, 0.0125...0.25])
        var generator = SplitMix64(seed: 5)
        let image = FloatImage(height: 28, width: 28,
                               pixels: (0..<(3 * 28 * 28)).map { _ in Float.random(in: 0...1, using: &generator) })
        for _ in 0..<50 {
            let (_, record) = scaled.pipelines[0].prepared(image, using: &generator)
            #expect(record.blurSigma.map { (0.0125...0.25).contains($0) } == true)
        }
    }

    @Test func viewTwoBlursAndSolarizesSometimes() {
        let r = rates(view: 1)
        expectRate(r.blur, 0.1, "blur")
        expectRate(r.solarize, 0.2, "solarize")
        expectRate(r.jitter, 0.8, "jitter")
        expectRate(r.grayscale, 0.2, "grayscale")
        expectRate(r.flip, 0.5, "flip")
    }

    @Test func viewsAreNormalisedAndSeeded() {
        let augmentation = MoCoAugmentation(imageSize: 12, cropMin: 0.2)
        let image = randomImage(width: 20, height: 16, channels: 1, seed: 2)
        let a = augmentation.augment(image, seed: 7, epoch: 3, index: 5)
        let b = augmentation.augment(image, seed: 7, epoch: 3, index: 5)
        #expect(a.view1.count == 3 * 12 * 12 && a.view2.count == 3 * 12 * 12)
        #expect(a.view1 == b.view1 && a.view2 == b.view2)
        #expect(a.view1 != a.view2)
        #expect(augmentation.augment(image, seed: 7, epoch: 4, index: 5).view1 != a.view1)
        #expect(augmentation.augment(image, seed: 8, epoch: 3, index: 5).view1 != a.view1)
        // Normalised [0, 1] values lie within [(0 − 0.485)/0.229, (1 − 0.406)/0.225].
        #expect(a.view1.allSatisfy { $0 >= -2.12 && $0 <= 2.64 })
    }

    /// The record's steps replayed by hand give the pipeline's output.
    @Test func pipelineAppliesStepsInOrder() {
        let augmentation = MoCoAugmentation(imageSize: 6)
        let image = FloatImage(randomImage(width: 9, height: 7, channels: 3, seed: 3))
        for index in 0..<20 {
            var generator = AugmentationSeed.generator(seed: 1, epoch: 0, index: index, view: 1)
            let (view, record) = augmentation.pipelines[1].prepared(image, using: &generator)
            var expected = image.resized(from: record.crop, height: 6, width: 6)
            if let jitter = record.jitter { ColorJitter().apply(jitter, to: &expected) }
            if record.grayscale { expected.convertToGrayscale() }
            if let sigma = record.blurSigma { expected.gaussianBlur(sigma: sigma) }
            if record.solarize { expected.solarize() }
            if record.flip { expected.flipHorizontally() }
            #expect(view.pixels == expected.pixels)
        }
    }

    @Test func seedsDifferPerCoordinate() {
        let base = AugmentationSeed.hash(1, 2, 3, 0)
        #expect(base != AugmentationSeed.hash(1, 2, 3, 1))
        #expect(base != AugmentationSeed.hash(1, 3, 2, 0))
        #expect(base != AugmentationSeed.hash(2, 2, 3, 0))
        #expect(base == AugmentationSeed.hash(1, 2, 3, 0))
    }
}
