import Tensors
import Testing
import TestSupport
@testable import Augment

@Suite struct ColorOpsTests {
    @Test func brightnessScalesAndClamps() {
        var image = pixelRow([(0.5, 0.25, 0.9)])
        image.adjustBrightness(by: 1.4)
        expectClose(image.pixels, [0.7, 0.35, 1], "x·1.4 clamped")
    }

    /// Contrast blends with the mean luma of the whole image: pixels (1, 0, 0) and (0, 0, 1) have
    /// lumas 0.299 and 0.114, mean 0.2065.
    @Test func contrastBlendsWithMeanLuma() {
        var image = pixelRow([(1, 0, 0), (0, 0, 1)])
        image.adjustContrast(by: 0.5)
        let m: Float = 0.2065 * 0.5
        expectClose(image.pixels, [0.5 + m, m, m, m, m, 0.5 + m], "0.5·x + 0.5·mean")
        var strong = pixelRow([(1, 0, 0), (0, 0, 1)])
        strong.adjustContrast(by: 1.8)
        // 1.8·x − 0.8·0.2065 = 1.8·x − 0.1652, clamped.
        expectClose(strong.pixels, [1, 0, 0, 0, 0, 1], "clamped")
    }

    /// Saturation blends each pixel with its own luma: (0.5, 0.4, 0.3) has luma 0.4185.
    @Test func saturationBlendsWithOwnLuma() {
        var image = pixelRow([(0.5, 0.4, 0.3)])
        image.adjustSaturation(by: 1.5)
        expectClose(image.pixels, [0.75 - 0.20925, 0.6 - 0.20925, 0.45 - 0.20925], "1.5·x − 0.5·y")
        var grey = pixelRow([(0.5, 0.4, 0.3)])
        grey.adjustSaturation(by: 0)
        expectClose(grey.pixels, [0.4185, 0.4185, 0.4185], "factor 0 is the luma")
    }

    @Test func grayscaleUsesLumaWeights() {
        var image = pixelRow([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.2, 0.4, 0.6)])
        image.convertToGrayscale()
        let luma: [Float] = [0.299, 0.587, 0.114, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6]
        expectClose(image.pixels, luma + luma + luma, "three equal luma planes")
    }

    @Test func hueShiftRotatesPrimaries() {
        var image = pixelRow([(1, 0, 0), (1, 0, 0), (0.5, 0.5, 0.5), (0, 0, 0)])
        image.adjustHue(by: 1.0 / 3)
        // Red → green; grey and black have no hue and stay.
        expectClose(image.pixels, [0, 0, 0.5, 0, 1, 1, 0.5, 0, 0, 0, 0.5, 0], absolute: 1e-6, "+1/3 turn")
        var back = pixelRow([(1, 0, 0)])
        back.adjustHue(by: -1.0 / 3)
        expectClose(back.pixels, [0, 0, 1], absolute: 1e-6, "−1/3 turn: red → blue")
        // Yellow (h = 1/6) shifted by 0.1 → h = 0.2667: (1 − 0.6, 1, 0).
        var yellow = pixelRow([(1, 1, 0)])
        yellow.adjustHue(by: 0.1)
        expectClose(yellow.pixels, [0.4, 1, 0], absolute: 1e-6, "yellow + 0.1")
    }

    /// Expectations from Python's `colorsys` (`hsv_to_rgb((h + shift) % 1, s, v)`), whose
    /// formulas torchvision's `_rgb2hsv` / `_hsv2rgb` follow.
    @Test(arguments: [
        ((Float(0.5), Float(0.4), Float(0.3)), Float(0.07), [Float(0.5), 0.484, 0.3]),
        ((0.1, 0.9, 0.6), -0.1, [0.1, 0.9, 0.12]),
        ((0.3, 0.2, 0.8), 0.25, [0.8, 0.2, 0.4]),
        ((0.95, 0.05, 0.5), 0.5, [0.05, 0.95, 0.5]),
    ])
    func hueShiftMatchesColorsys(_ color: (Float, Float, Float), _ shift: Float, _ expected: [Float]) {
        var image = pixelRow([color])
        image.adjustHue(by: shift)
        expectClose(image.pixels, expected, absolute: 1e-6, "shift \(shift)")
    }

    @Test func zeroHueShiftIsRoundTrip() {
        var image = pixelRow([(0.5, 0.4, 0.3), (0.1, 0.9, 0.6), (0.3, 0.2, 0.8)])
        let before = image.pixels
        image.adjustHue(by: 0)
        expectClose(image.pixels, before, absolute: 1e-6, "RGB → HSV → RGB")
    }

    @Test func jitterDrawsFactorsInRangeAndEveryOrder() {
        let jitter = ColorJitter()
        var generator = SplitMix64(seed: 9)
        var orders = Set<[Int]>()
        for _ in 0..<500 {
            let p = jitter.parameters(using: &generator)
            #expect(p.brightness >= 0.6 && p.brightness <= 1.4)
            #expect(p.contrast >= 0.6 && p.contrast <= 1.4)
            #expect(p.saturation >= 0.8 && p.saturation <= 1.2)
            #expect(p.hue >= -0.1 && p.hue <= 0.1)
            #expect(p.order.sorted() == [0, 1, 2, 3])
            orders.insert(p.order)
        }
        #expect(orders.count == 24)
    }

    /// Applying parameters runs the ops in the drawn order: brightness then contrast differs
    /// from contrast then brightness once clamping bites.
    @Test func jitterFollowsOrder() {
        let jitter = ColorJitter()
        let base = pixelRow([(0.9, 0.8, 0.1), (0.2, 0.3, 0.4)])
        var first = base, second = base
        let factors = (brightness: Float(1.4), contrast: Float(0.6))
        jitter.apply(.init(order: [0, 1], brightness: factors.brightness, contrast: factors.contrast,
                           saturation: 1, hue: 0), to: &first)
        var expected = base
        expected.adjustBrightness(by: factors.brightness)
        expected.adjustContrast(by: factors.contrast)
        #expect(first.pixels == expected.pixels)
        jitter.apply(.init(order: [1, 0], brightness: factors.brightness, contrast: factors.contrast,
                           saturation: 1, hue: 0), to: &second)
        #expect(first.pixels != second.pixels)
    }
}
