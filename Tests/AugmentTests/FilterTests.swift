import Datasets
import Foundation
import Tensors
import Testing
import TestSupport
@testable import Augment

@Suite struct FilterTests {
    @Test func conversionReplicatesGreyAndScales() {
        let grey = Image(width: 2, height: 1, channels: 1, pixels: [0, 255])
        #expect(FloatImage(grey).pixels == [0, 1, 0, 1, 0, 1])
        let rgb = Image(width: 2, height: 1, channels: 3, pixels: [255, 0, 51, 0, 102, 255])
        expectClose(FloatImage(rgb).pixels, [1, 0, 0, 0.4, 0.2, 1], "planar, /255")
    }

    @Test func gaussianWeightsAreNormalisedSamples() {
        let weights = FloatImage.gaussianWeights(sigma: 1)
        #expect(weights.count == 7)
        #expect(abs(weights.reduce(0, +) - 1) < 1e-6)
        let raw = (-3...3).map { Float(exp(-Double($0 * $0) / 2)) }
        let total = raw.reduce(0, +)
        expectClose(weights, raw.map { $0 / total }, "exp(−x²/2) / Σ")
        #expect(FloatImage.gaussianWeights(sigma: 0.1).count == 3)
        #expect(FloatImage.gaussianWeights(sigma: 2).count == 13)
    }

    @Test func blurKeepsConstantImage() {
        var image = FloatImage(height: 5, width: 4, repeating: 0.3)
        image.gaussianBlur(sigma: 1.7)
        expectClose(image.pixels, [Float](repeating: 0.3, count: 60), absolute: 1e-6, "constant")
    }

    /// A delta in the middle of a 15×15 image becomes the outer product of the sampled kernel.
    @Test func blurOfDeltaIsSampledGaussian() {
        var image = FloatImage(height: 15, width: 15)
        for c in 0..<3 { image[c, 7, 7] = 1 }
        image.gaussianBlur(sigma: 1)
        let w = FloatImage.gaussianWeights(sigma: 1)
        var expected = [Float](repeating: 0, count: 225)
        for dy in -3...3 { for dx in -3...3 { expected[(7 + dy) * 15 + 7 + dx] = w[dy + 3] * w[dx + 3] } }
        expectClose(Array(image.pixels[0..<225]), expected, absolute: 1e-7, "delta → kernel")
        expectClose(Array(image.pixels[450..<675]), expected, absolute: 1e-7, "blue plane")
    }

    /// Clamp padding: a step at the border sees the edge pixel repeated, so the edge value moves
    /// less than it would with zero padding.
    @Test func blurRepeatsEdges() {
        var image = rowImage(red: [1, 0, 0], green: [1, 1, 1], blue: [0, 0, 0])
        image.gaussianBlur(sigma: 0.5)
        let w = FloatImage.gaussianWeights(sigma: 0.5) // radius 2
        expectClose(Array(image.pixels[0..<3]), [w[0] + w[1] + w[2], w[0] + w[1], w[0]],
                    absolute: 1e-6, "left edge repeated")
        expectClose(Array(image.pixels[3..<6]), [1, 1, 1], absolute: 1e-6, "constant plane")
    }

    @Test func solarizeThresholdIs128() {
        let values: [Float] = [0, 127.0 / 255, 128.0 / 255, 200.0 / 255, 1]
        var image = rowImage(red: values, green: values, blue: values)
        image.solarize()
        let expected: [Float] = [0, 127.0 / 255, 1 - 128.0 / 255, 1 - 200.0 / 255, 0]
        #expect(image.pixels == expected + expected + expected)
    }

    @Test func flipMirrorsRows() {
        var image = FloatImage(height: 2, width: 3, pixels: (0..<18).map(Float.init))
        image.flipHorizontally()
        #expect(image.pixels == [2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9, 14, 13, 12, 17, 16, 15])
    }

    @Test func normalizeUsesImageNetStatistics() {
        let image = pixelRow([(0.485, 1, 0)])
        expectClose(image.normalized(), [0, (1 - 0.456) / 0.224, -0.406 / 0.225], "(x − mean)/std")
    }
}
