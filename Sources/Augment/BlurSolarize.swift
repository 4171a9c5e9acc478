import Foundation

extension FloatImage {
    /// The sampled, normalised Gaussian `exp(−x²/2σ²)` for x in −r…r with r = ⌈3σ⌉.
    public static func gaussianWeights(sigma: Double) -> [Float] {
        precondition(sigma > 0, "sigma must be positive")
        let radius = Int((3 * sigma).rounded(.up))
        let raw = (-radius...radius).map { exp(-Double($0 * $0) / (2 * sigma * sigma)) }
        let total = raw.reduce(0, +)
        return raw.map { Float($0 / total) }
    }

    /// A separable Gaussian blur of standard deviation `sigma`, radius ⌈3σ⌉, with edge pixels
    /// repeated (clamp padding). MoCo v3 calls PIL's `ImageFilter.GaussianBlur(radius=σ)`, whose
    /// "radius" is σ; PIL approximates the Gaussian by three extended box blurs of the same
    /// variance (Gwosdek et al. 2011, libImaging/BoxBlur.c), so PIL's output differs slightly from
    /// this exact kernel, mostly in the tails.
    public mutating func gaussianBlur(sigma: Double) {
        let weights = Self.gaussianWeights(sigma: sigma)
        let radius = weights.count / 2
        let h = height, w = width
        var line = [Float](repeating: 0, count: max(h, w))
        pixels.withUnsafeMutableBufferPointer { p in
            for c in 0..<3 {
                let base = c * h * w
                for y in 0..<h {
                    let row = base + y * w
                    for x in 0..<w {
                        var sum: Float = 0
                        for k in 0..<weights.count {
                            let xx = min(max(x + k - radius, 0), w - 1)
                            sum += weights[k] * p[row + xx]
                        }
                        line[x] = sum
                    }
                    for x in 0..<w { p[row + x] = line[x] }
                }
                for x in 0..<w {
                    for y in 0..<h {
                        var sum: Float = 0
                        for k in 0..<weights.count {
                            let yy = min(max(y + k - radius, 0), h - 1)
                            sum += weights[k] * p[base + yy * w + x]
                        }
                        line[y] = sum
                    }
                    for y in 0..<h { p[base + y * w + x] = line[y] }
                }
            }
        }
    }

    /// PIL's threshold for `ImageOps.solarize(img, 128)`, on the [0, 1] scale.
    public static let solarizeThreshold: Float = 128 / 255

    /// `ImageOps.solarize` with threshold 128: every value ≥ 128/255 becomes 1 − x.
    public mutating func solarize(threshold: Float = FloatImage.solarizeThreshold) {
        for i in pixels.indices where pixels[i] >= threshold { pixels[i] = 1 - pixels[i] }
    }
}
