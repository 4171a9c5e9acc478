/// A rectangle of whole pixels inside an image: the crop box of `RandomResizedCrop` and
/// `CenterCrop`, in torchvision's (top, left, height, width) order.
public struct CropBox: Sendable, Equatable, CustomStringConvertible {
    public var top: Int
    public var left: Int
    public var height: Int
    public var width: Int

    public init(top: Int, left: Int, height: Int, width: Int) {
        self.top = top
        self.left = left
        self.height = height
        self.width = width
    }

    public var description: String { "(top \(top), left \(left), \(height)×\(width))" }
}

/// The weights of one axis of a PIL resampling pass: for output `i`, input pixels
/// `start[i] ..< start[i] + count[i]` weighted by `weights[i·stride ..< i·stride + count[i]]`.
struct ResampleAxis {
    var start: [Int]
    var count: [Int]
    var weights: [Float]
    var stride: Int

    /// PIL's `precompute_coeffs` (libImaging/Resample.c) for the bilinear (triangle) filter of
    /// support 1 on a cropped axis of `inputLength` pixels that starts at `inputOffset` of the
    /// full image: the filter's support is clipped to the crop (torchvision's `resized_crop`
    /// crops, then resizes the cropped image, so no pixel outside the box contributes), and the
    /// starts are shifted by `inputOffset` to index the full image. Output pixel `i` is centred
    /// at `(i + 0.5)·scale` in crop coordinates;
    /// when downscaling (scale > 1) the filter is stretched by `scale`, so every input pixel
    /// contributes (antialiasing); the weights are normalised to sum to 1. `Int(...)` truncates
    /// toward zero as the C cast does, which matters at the left edge.
    init(inputOffset: Int, inputLength: Int, outputSize: Int) {
        let inputSize = inputLength
        let scale = Double(inputLength) / Double(outputSize)
        let filterScale = max(scale, 1)
        let support = 1.0 * filterScale
        let kernelSize = Int(support.rounded(.up)) * 2 + 1
        stride = kernelSize
        start = [Int](repeating: 0, count: outputSize)
        count = [Int](repeating: 0, count: outputSize)
        weights = [Float](repeating: 0, count: outputSize * kernelSize)
        let inverseScale = 1 / filterScale
        var raw = [Double](repeating: 0, count: kernelSize)
        for i in 0..<outputSize {
            let center = (Double(i) + 0.5) * scale
            let low = max(Int(center - support + 0.5), 0)
            let high = min(Int(center + support + 0.5), inputSize)
            let n = min(max(high - low, 0), kernelSize)
            var total = 0.0
            for k in 0..<n {
                let x = (Double(k + low) - center + 0.5) * inverseScale
                let w = max(1 - abs(x), 0)
                raw[k] = w
                total += w
            }
            start[i] = inputOffset + low
            count[i] = n
            for k in 0..<n {
                weights[i * kernelSize + k] = Float(total != 0 ? raw[k] / total : 0)
            }
        }
    }
}

extension FloatImage {
    /// Crops `box` and resizes the crop to `height`×`width`, as torchvision's `resized_crop` does
    /// on PIL images (`img.crop(box).resize(size, BILINEAR)`): a separable triangle filter,
    /// horizontal pass first, antialiased when shrinking, reading only pixels inside the box.
    /// (PIL's own `resize(size, box=…)` would let the filter reach outside the box.) PIL rounds
    /// to 8 bits between and after the passes; we keep floats, so results differ from PIL by
    /// under 1/255.
    public func resized(from box: CropBox? = nil, height outputHeight: Int, width outputWidth: Int) -> FloatImage {
        let box = box ?? CropBox(top: 0, left: 0, height: height, width: width)
        precondition(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0
                     && box.top + box.height <= height && box.left + box.width <= width,
                     "crop box \(box) is outside the \(height)×\(width) image")
        precondition(outputHeight > 0 && outputWidth > 0, "resize to an empty image")
        let horizontal = ResampleAxis(inputOffset: box.left, inputLength: box.width, outputSize: outputWidth)
        let vertical = ResampleAxis(inputOffset: box.top, inputLength: box.height, outputSize: outputHeight)
        // Rows the vertical pass reads: only those need the horizontal pass.
        let firstRow = vertical.start[0]
        var lastRow = firstRow
        for y in 0..<outputHeight { lastRow = max(lastRow, vertical.start[y] + vertical.count[y]) }
        let rows = lastRow - firstRow
        var middle = [Float](repeating: 0, count: 3 * rows * outputWidth)
        var output = FloatImage(height: outputHeight, width: outputWidth)
        let inputWidth = width, inputHeight = height
        pixels.withUnsafeBufferPointer { source in
            middle.withUnsafeMutableBufferPointer { middle in
                horizontal.weights.withUnsafeBufferPointer { weights in
                    for c in 0..<3 {
                        for r in 0..<rows {
                            let inRow = (c * inputHeight + firstRow + r) * inputWidth
                            let outRow = (c * rows + r) * outputWidth
                            for x in 0..<outputWidth {
                                let s = inRow + horizontal.start[x]
                                let w = x * horizontal.stride
                                var sum: Float = 0
                                for k in 0..<horizontal.count[x] { sum += weights[w + k] * source[s + k] }
                                middle[outRow + x] = sum
                            }
                        }
                    }
                }
            }
            middle.withUnsafeBufferPointer { middle in
                output.pixels.withUnsafeMutableBufferPointer { target in
                    vertical.weights.withUnsafeBufferPointer { weights in
                        for c in 0..<3 {
                            for y in 0..<outputHeight {
                                let outRow = (c * outputHeight + y) * outputWidth
                                let w = y * vertical.stride
                                let first = (c * rows + vertical.start[y] - firstRow) * outputWidth
                                for x in 0..<outputWidth { target[outRow + x] = 0 }
                                for k in 0..<vertical.count[y] {
                                    let weight = weights[w + k]
                                    let inRow = first + k * outputWidth
                                    for x in 0..<outputWidth { target[outRow + x] += weight * middle[inRow + x] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return output
    }

    /// The `box` region copied out without resampling (torchvision's `crop`).
    public func cropped(to box: CropBox) -> FloatImage {
        precondition(box.top >= 0 && box.left >= 0 && box.top + box.height <= height
                     && box.left + box.width <= width, "crop box \(box) is outside the \(height)×\(width) image")
        var output = FloatImage(height: box.height, width: box.width)
        for c in 0..<3 {
            for y in 0..<box.height {
                let source = (c * height + box.top + y) * width + box.left
                let target = (c * box.height + y) * box.width
                output.pixels[target..<(target + box.width)] = pixels[source..<(source + box.width)]
            }
        }
        return output
    }
}
