import Tensors
import Testing
import TestSupport
@testable import Augment

@Suite struct ResizeTests {
    @Test func sameSizeIsIdentity() {
        let image = FloatImage(randomImage(width: 5, height: 3, channels: 3, seed: 7))
        let resized = image.resized(height: 3, width: 5)
        #expect(resized.pixels == image.pixels)
    }

    /// PIL bilinear 2 → 4: centres at 0.25, 0.75, 1.25, 1.75 in input pixels; the edge outputs
    /// see only the nearest input once the weights are renormalised.
    @Test func upscaleTwoToFour() {
        let image = rowImage(red: [0.2, 0.6], green: [1, 0], blue: [0, 0])
        let resized = image.resized(height: 1, width: 4)
        expectClose(resized.pixels, [0.2, 0.3, 0.5, 0.6, 1, 0.75, 0.25, 0, 0, 0, 0, 0], "2 → 4")
    }

    /// 4 → 2 is antialiased: support 2, weights 0.75, 0.75, 0.25 (truncated window at the left
    /// edge), and 0.25, 0.75, 0.75 for the second output, each divided by 1.75.
    @Test func downscaleFourToTwoAverages() {
        let image = rowImage(red: [0.1, 0.2, 0.4, 0.8], green: [1, 1, 1, 1], blue: [0, 0, 0, 1])
        let resized = image.resized(height: 1, width: 2)
        expectClose(resized.pixels, [1.3 / 7, 3.8 / 7, 1, 1, 0, 3.0 / 7], "4 → 2")
    }

    /// The vertical pass uses the same weights as the horizontal one.
    @Test func upscaleIsSeparable() {
        // 2×2: rows (0, 1) and (1, 1).
        let plane: [Float] = [0, 1, 1, 1]
        let image = FloatImage(height: 2, width: 2, pixels: plane + plane + plane)
        let resized = image.resized(height: 4, width: 4)
        let axis: [[Float]] = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
        var expected: [Float] = []
        for y in 0..<4 {
            for x in 0..<4 {
                var sum: Float = 0
                for i in 0..<2 { for j in 0..<2 { sum += axis[y][i] * axis[x][j] * plane[i * 2 + j] } }
                expected.append(sum)
            }
        }
        expectClose(Array(resized.pixels[0..<16]), expected, "2×2 → 4×4")
        #expect(resized.pixels[16..<32] == resized.pixels[0..<16])
    }

    @Test func cropBoxIsResampledFromItsOwnPixels() {
        let image = rowImage(red: [0.9, 0.1, 0.5, 0.3], green: [0, 0, 0, 0], blue: [1, 1, 1, 1])
        let resized = image.resized(from: CropBox(top: 0, left: 1, height: 1, width: 2), height: 1, width: 2)
        expectClose(resized.pixels, [0.1, 0.5, 0, 0, 1, 1], "crop then identity")
    }

    /// torchvision crops, then resizes: a box surrounded by huge values must not see them,
    /// enlarging (the filter's support would reach past the box edge) or shrinking.
    @Test(arguments: [(7, 9), (2, 3), (4, 5)]) func noPixelOutsideTheBoxContributes(height: Int, width: Int) {
        let box = CropBox(top: 2, left: 3, height: 4, width: 5)
        var image = FloatImage(height: 10, width: 10)
        var generator = SplitMix64(seed: 5)
        for c in 0..<3 {
            for y in 0..<10 {
                for x in 0..<10 {
                    let inside = (box.top..<(box.top + box.height)).contains(y) && (box.left..<(box.left + box.width)).contains(x)
                    image.pixels[(c * 10 + y) * 10 + x] = inside ? Float.random(in: 0...1, using: &generator) : 1000
                }
            }
        }
        let resized = image.resized(from: box, height: height, width: width)
        #expect(resized.pixels.allSatisfy { (0...1).contains($0) }, "\(resized.pixels.max() ?? 0)")
        // And it equals resizing the crop cut out first.
        expectClose(resized.pixels, image.cropped(to: box).resized(height: height, width: width).pixels,
                    relative: 0, absolute: 0, "resized(from:) = cropped, then resized")
    }

    @Test func evalTransformKeepsNativeSizeAndCentreCrops() {
        let native = randomImage(width: 28, height: 28, channels: 1, seed: 3)
        let transform = EvalTransform(imageSize: 28)
        #expect(transform(native) == FloatImage(native).normalized())

        // 40 wide, 30 high: short side → round(28·256/224) = 32, long side int(32·40/30) = 42,
        // crop offsets (32 − 28)/2 = 2 and (42 − 28)/2 = 7.
        let wide = randomImage(width: 40, height: 30, channels: 3, seed: 4)
        let prepared = transform.prepared(wide)
        #expect(prepared.height == 28 && prepared.width == 28)
        let expected = FloatImage(wide).resized(height: 32, width: 42)
            .cropped(to: CropBox(top: 2, left: 7, height: 28, width: 28))
        #expect(prepared.pixels == expected.pixels)
        #expect(transform(wide).count == 3 * 28 * 28)
    }
}

@Suite struct RandomResizedCropTests {
    @Test func boxesStayWithinScaleAndRatio() {
        let crop = RandomResizedCrop(size: 32, scale: 0.08...1)
        var generator = SplitMix64(seed: 11)
        var fractions: [Double] = []
        for _ in 0..<2000 {
            let box = crop.parameters(height: 224, width: 224, using: &generator)
            #expect(box.top >= 0 && box.left >= 0 && box.top + box.height <= 224 && box.left + box.width <= 224)
            let fraction = Double(box.height * box.width) / (224 * 224)
            let ratio = Double(box.width) / Double(box.height)
            // Rounding w and h to integers (≥ 54 px here) moves both by at most ~1%.
            #expect(fraction >= 0.08 * 0.97 && fraction <= 1)
            #expect(ratio >= 0.75 / 1.025 && ratio <= 4.0 / 3 * 1.025)
            fractions.append(fraction)
        }
        #expect(fractions.min()! < 0.1)
        #expect(fractions.max()! > 0.95)
    }

    @Test func fallbackIsCentralWithClampedRatio() {
        let crop = RandomResizedCrop(size: 8, scale: 0.08...1)
        var generator = SplitMix64(seed: 5)
        // No box of ≥ 8% area with ratio ≤ 4/3 fits in one row, so all 10 tries fail.
        #expect(crop.parameters(height: 1, width: 100, using: &generator) == CropBox(top: 0, left: 49, height: 1, width: 1))
        #expect(crop.parameters(height: 100, width: 1, using: &generator) == CropBox(top: 49, left: 0, height: 1, width: 1))
        #expect(RandomResizedCrop.fallback(height: 10, width: 30, ratio: 0.75...(4.0 / 3))
                == CropBox(top: 0, left: 8, height: 10, width: 13))
        #expect(RandomResizedCrop.fallback(height: 10, width: 12, ratio: 0.75...(4.0 / 3))
                == CropBox(top: 0, left: 0, height: 10, width: 12))
    }

    @Test func boxesAreDeterminedBySeed() {
        let crop = RandomResizedCrop(size: 16)
        func boxes(_ seed: UInt64) -> [CropBox] {
            var generator = SplitMix64(seed: seed)
            return (0..<20).map { _ in crop.parameters(height: 60, width: 80, using: &generator) }
        }
        #expect(boxes(1) == boxes(1))
        #expect(boxes(1) != boxes(2))
    }
}
