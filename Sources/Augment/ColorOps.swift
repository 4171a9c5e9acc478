import Tensors

/// The photometric ops of torchvision's `transforms.functional` on a planar float image, each
/// clamped to [0, 1] as torchvision's `_blend` does.
extension FloatImage {
    /// ITU-R 601-2 luma, the weights of PIL's `convert("L")` and torchvision's `rgb_to_grayscale`.
    public static let grayscaleWeights: (red: Float, green: Float, blue: Float) = (0.299, 0.587, 0.114)

    /// The luma plane (H·W values).
    public func grayscalePlane() -> [Float] {
        let plane = planeSize
        let (wr, wg, wb) = Self.grayscaleWeights
        var grey = [Float](repeating: 0, count: plane)
        pixels.withUnsafeBufferPointer { p in
            for i in 0..<plane { grey[i] = wr * p[i] + wg * p[plane + i] + wb * p[2 * plane + i] }
        }
        return grey
    }

    /// Replaces the three channels by the luma (`RandomGrayscale` with 3 output channels).
    public mutating func convertToGrayscale() {
        let grey = grayscalePlane()
        let plane = planeSize
        for c in 0..<3 { pixels.replaceSubrange((c * plane)..<((c + 1) * plane), with: grey) }
    }

    /// `adjust_brightness`: `clamp(x·factor)` (a blend with black).
    public mutating func adjustBrightness(by factor: Float) {
        for i in pixels.indices { pixels[i] = min(max(pixels[i] * factor, 0), 1) }
    }

    /// `adjust_contrast`: blend with the mean of the grayscale image,
    /// `clamp(factor·x + (1 − factor)·mean)`.
    public mutating func adjustContrast(by factor: Float) {
        let grey = grayscalePlane()
        let mean = grey.reduce(0, +) / Float(grey.count)
        let offset = (1 - factor) * mean
        for i in pixels.indices { pixels[i] = min(max(factor * pixels[i] + offset, 0), 1) }
    }

    /// `adjust_saturation`: blend each pixel with its own luma, `clamp(factor·x + (1 − factor)·y)`.
    public mutating func adjustSaturation(by factor: Float) {
        let grey = grayscalePlane()
        let plane = planeSize
        for c in 0..<3 {
            for i in 0..<plane {
                let j = c * plane + i
                pixels[j] = min(max(factor * pixels[j] + (1 - factor) * grey[i], 0), 1)
            }
        }
    }

    /// `adjust_hue`: convert to HSV, add `shift` (in turns, |shift| ≤ 0.5) to H modulo 1, convert
    /// back. Formulas of torchvision's `_rgb2hsv` / `_hsv2rgb` (functional_tensor.py), which
    /// match Python's `colorsys`. Grey pixels (S = 0) are unchanged.
    public mutating func adjustHue(by shift: Float) {
        let plane = planeSize
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<plane {
                let r = p[i], g = p[plane + i], b = p[2 * plane + i]
                let maxc = max(r, g, b), minc = min(r, g, b)
                let chroma = maxc - minc
                if chroma == 0 { continue }
                let v = maxc
                let s = chroma / maxc
                let rc = (maxc - r) / chroma, gc = (maxc - g) / chroma, bc = (maxc - b) / chroma
                var h: Float
                if maxc == r { h = bc - gc } else if maxc == g { h = 2 + rc - bc } else { h = 4 + gc - rc }
                h = h / 6 + shift
                h -= h.rounded(.down)
                let scaled = h * 6
                let sector = Int(scaled.rounded(.down)) % 6
                let f = scaled - scaled.rounded(.down)
                let pv = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
                let rgb: (Float, Float, Float)
                switch sector {
                case 0: rgb = (v, t, pv)
                case 1: rgb = (q, v, pv)
                case 2: rgb = (pv, v, t)
                case 3: rgb = (pv, q, v)
                case 4: rgb = (t, pv, v)
                default: rgb = (v, pv, q)
                }
                p[i] = rgb.0
                p[plane + i] = rgb.1
                p[2 * plane + i] = rgb.2
            }
        }
    }
}

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: factors uniform in
/// [1 − b, 1 + b], [1 − c, 1 + c], [1 − s, 1 + s] and a hue shift uniform in [−h, h], applied
/// in an order drawn by `torch.randperm(4)` (`ColorJitter.get_params`).
public struct ColorJitter: Sendable {
    public var brightness: Double
    public var contrast: Double
    public var saturation: Double
    public var hue: Double

    /// MoCo v3's values (`main_moco.py`, the BYOL recipe).
    public init(brightness: Double = 0.4, contrast: Double = 0.4, saturation: Double = 0.2, hue: Double = 0.1) {
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
    }

    /// One draw of `get_params`: the op order (0 brightness, 1 contrast, 2 saturation, 3 hue) and
    /// the four factors, drawn in torchvision's order.
    public struct Parameters: Sendable, Equatable {
        public var order: [Int]
        public var brightness: Float
        public var contrast: Float
        public var saturation: Float
        public var hue: Float
    }

    public func parameters(using generator: inout SplitMix64) -> Parameters {
        let order = generator.permutation(4)
        let b = generator.uniform(1 - brightness, 1 + brightness)
        let c = generator.uniform(1 - contrast, 1 + contrast)
        let s = generator.uniform(1 - saturation, 1 + saturation)
        let h = generator.uniform(-hue, hue)
        return Parameters(order: order, brightness: Float(b), contrast: Float(c), saturation: Float(s), hue: Float(h))
    }

    /// Applies the ops of `parameters` in their order.
    public func apply(_ parameters: Parameters, to image: inout FloatImage) {
        for op in parameters.order {
            switch op {
            case 0: image.adjustBrightness(by: parameters.brightness)
            case 1: image.adjustContrast(by: parameters.contrast)
            case 2: image.adjustSaturation(by: parameters.saturation)
            default: image.adjustHue(by: parameters.hue)
            }
        }
    }

    public func callAsFunction(_ image: inout FloatImage, using generator: inout SplitMix64) {
        apply(parameters(using: &generator), to: &image)
    }
}
