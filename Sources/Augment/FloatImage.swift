import Datasets

/// A float RGB image in planar (3, H, W) layout with values in [0, 1], the form every
/// augmentation works on (torchvision's `ToTensor` layout, but produced before the colour ops
/// rather than after them: PIL rounds to 8 bits after each op, we keep full precision).
public struct FloatImage: Sendable, Equatable {
    /// Always 3: grey images are replicated so the pipelines see one shape.
    public let channels = 3
    public var height: Int
    public var width: Int
    /// (3, height, width), row-major per plane.
    public var pixels: [Float]

    /// Pixels per plane.
    @inlinable public var planeSize: Int { height * width }

    public init(height: Int, width: Int, pixels: [Float]) {
        precondition(pixels.count == 3 * height * width, "a FloatImage holds 3·H·W values")
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// A (3, height, width) image filled with `value`.
    public init(height: Int, width: Int, repeating value: Float = 0) {
        self.init(height: height, width: width, pixels: [Float](repeating: value, count: 3 * height * width))
    }

    /// Converts an 8-bit interleaved image: `x / 255` as torchvision's `ToTensor`; a grey image
    /// is replicated to three channels, as PIL's `convert("RGB")` in the reference loader does.
    public init(_ image: Image) {
        let plane = image.width * image.height
        var values = [Float](repeating: 0, count: 3 * plane)
        let scale: Float = 1 / 255
        image.pixels.withUnsafeBufferPointer { source in
            values.withUnsafeMutableBufferPointer { target in
                if image.channels == 1 {
                    for p in 0..<plane {
                        let v = Float(source[p]) * scale
                        target[p] = v
                        target[plane + p] = v
                        target[2 * plane + p] = v
                    }
                } else {
                    for p in 0..<plane {
                        target[p] = Float(source[3 * p]) * scale
                        target[plane + p] = Float(source[3 * p + 1]) * scale
                        target[2 * plane + p] = Float(source[3 * p + 2]) * scale
                    }
                }
            }
        }
        self.init(height: image.height, width: image.width, pixels: values)
    }

    /// The value of channel `channel` at row `y`, column `x`.
    public subscript(channel: Int, y: Int, x: Int) -> Float {
        get { pixels[(channel * height + y) * width + x] }
        set { pixels[(channel * height + y) * width + x] = newValue }
    }
}

/// The ImageNet channel statistics used by `transforms.Normalize` in MoCo v3's `main_moco.py`
/// and `main_lincls.py`.
public enum ImageNetStatistics {
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let standardDeviation: [Float] = [0.229, 0.224, 0.225]
}

extension FloatImage {
    /// Writes `(x − mean[c]) / std[c]` per channel into `output` (3·H·W values), as torchvision's
    /// `Normalize`. Writing into the caller's buffer lets a batch be filled without copies.
    public func normalized(into output: UnsafeMutableBufferPointer<Float>,
                           mean: [Float] = ImageNetStatistics.mean,
                           standardDeviation: [Float] = ImageNetStatistics.standardDeviation) {
        precondition(output.count >= pixels.count, "the output holds fewer than 3·H·W values")
        let plane = planeSize
        pixels.withUnsafeBufferPointer { source in
            for c in 0..<3 {
                let m = mean[c]
                let inverse = 1 / standardDeviation[c]
                for p in (c * plane)..<((c + 1) * plane) {
                    output[p] = (source[p] - m) * inverse
                }
            }
        }
    }

    /// `normalized(into:)` into a new array.
    public func normalized(mean: [Float] = ImageNetStatistics.mean,
                           standardDeviation: [Float] = ImageNetStatistics.standardDeviation) -> [Float] {
        var output = [Float](repeating: 0, count: pixels.count)
        output.withUnsafeMutableBufferPointer { normalized(into: $0, mean: mean, standardDeviation: standardDeviation) }
        return output
    }

    /// Mirrors every row (torchvision's `hflip`).
    public mutating func flipHorizontally() {
        let w = width
        pixels.withUnsafeMutableBufferPointer { values in
            for row in 0..<(3 * height) {
                var left = row * w
                var right = left + w - 1
                while left < right {
                    values.swapAt(left, right)
                    left += 1
                    right -= 1
                }
            }
        }
    }
}
