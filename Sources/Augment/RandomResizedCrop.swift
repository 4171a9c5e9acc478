import Datasets
import Foundation
import Tensors

/// torchvision's `RandomResizedCrop(size, scale=(cropMin, 1), ratio=(3/4, 4/3))` with bilinear
/// interpolation, the first step of both MoCo v3 pipelines (SPEC A.7).
public struct RandomResizedCrop: Sendable {
    public var size: Int
    public var scale: ClosedRange<Double>
    public var ratio: ClosedRange<Double>

    public init(size: Int, scale: ClosedRange<Double> = 0.08...1, ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)) {
        precondition(size > 0, "crop size must be positive")
        self.size = size
        self.scale = scale
        self.ratio = ratio
    }

    /// `RandomResizedCrop.get_params` (torchvision/transforms/transforms.py): up to 10 tries of
    /// an area fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`, rounded
    /// half-to-even as Python's `round`; the first box that fits is placed uniformly. If none
    /// fits, the central crop of the whole image with its ratio clamped into `ratio`.
    public func parameters(height: Int, width: Int, using generator: inout SplitMix64) -> CropBox {
        let area = Double(height * width)
        let logRatio = (log(ratio.lowerBound), log(ratio.upperBound))
        for _ in 0..<10 {
            let targetArea = area * generator.uniform(scale.lowerBound, scale.upperBound)
            let aspectRatio = exp(generator.uniform(logRatio.0, logRatio.1))
            let w = Int((targetArea * aspectRatio).squareRoot().rounded(.toNearestOrEven))
            let h = Int((targetArea / aspectRatio).squareRoot().rounded(.toNearestOrEven))
            if w > 0, w <= width, h > 0, h <= height {
                let top = generator.integer(below: height - h + 1)
                let left = generator.integer(below: width - w + 1)
                return CropBox(top: top, left: left, height: h, width: w)
            }
        }
        return Self.fallback(height: height, width: width, ratio: ratio)
    }

    /// The central crop `get_params` returns after 10 failed tries.
    static func fallback(height: Int, width: Int, ratio: ClosedRange<Double>) -> CropBox {
        let inputRatio = Double(width) / Double(height)
        var w = width, h = height
        if inputRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inputRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return CropBox(top: (height - h) / 2, left: (width - w) / 2, height: h, width: w)
    }

    /// Draws a box and resizes it to `size`×`size` (PIL bilinear, see `FloatImage.resized`).
    public func callAsFunction(_ image: FloatImage, using generator: inout SplitMix64) -> FloatImage {
        let box = parameters(height: image.height, width: image.width, using: &generator)
        return image.resized(from: box, height: size, width: size)
    }
}

/// The evaluation transform of `main_lincls.py` (SPEC A.8): `Resize(S·256/224)` of the shorter
/// side, `CenterCrop(S)`, `Normalize`. An image that already is S×S is only normalised, so the
/// 28×28 and 32×32 datasets are seen at their native resolution as in training.
public struct EvalTransform: Sendable {
    public var imageSize: Int

    public init(imageSize: Int) {
        precondition(imageSize > 0, "imageSize must be positive")
        self.imageSize = imageSize
    }

    /// Number of floats one output holds: 3·S·S.
    public var outputCount: Int { 3 * imageSize * imageSize }

    /// The resized, centre-cropped image before normalisation.
    public func prepared(_ image: Image) -> FloatImage {
        let source = FloatImage(image)
        let s = imageSize
        if image.height == s && image.width == s { return source }
        // torchvision `_compute_resized_output_size`: the short side becomes `resize`, the long
        // side `int(resize · long / short)` (truncated).
        let resize = Int((Double(s) * 256 / 224).rounded(.toNearestOrEven))
        let (h, w): (Int, Int)
        if image.height <= image.width {
            (h, w) = (resize, Int(Double(resize) * Double(image.width) / Double(image.height)))
        } else {
            (h, w) = (Int(Double(resize) * Double(image.height) / Double(image.width)), resize)
        }
        let resized = source.resized(height: h, width: w)
        // `center_crop`: offsets `int(round((h − S) / 2))`, half to even as Python's `round`.
        let top = Int((Double(h - s) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(w - s) / 2).rounded(.toNearestOrEven))
        precondition(top >= 0 && left >= 0, "resized image smaller than the crop")
        return resized.cropped(to: CropBox(top: top, left: left, height: s, width: s))
    }

    /// Transforms `image` and writes the normalised (3, S, S) values into `output`.
    public func callAsFunction(_ image: Image, into output: UnsafeMutableBufferPointer<Float>) {
        prepared(image).normalized(into: output)
    }

    /// Transforms `image` into a new normalised (3, S, S) array.
    public func callAsFunction(_ image: Image) -> [Float] {
        prepared(image).normalized()
    }
}
