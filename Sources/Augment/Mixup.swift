import Foundation
import Tensors

/// DeiT's batch mixing (timm's `Mixup` in its default `mode='batch'`): one draw per batch mixes
/// every image with the batch flipped (`x.flip(0)`), by mixup (`λx + (1−λ)x'`, λ ~ Beta(α, α)) or
/// cutmix (a box of area fraction 1 − λ pasted from x', λ then corrected to the box's true
/// area), chosen with `switchProbability`; the targets are the label-smoothed one-hot rows
/// mixed with the same λ. Runs on the host as part of the data pipeline, before the upload.
public struct Mixup: Sendable, Equatable {
    /// Mixup's α (0: off).
    public var mixupAlpha: Double
    /// Cutmix's α (0: off).
    public var cutmixAlpha: Double
    /// With both on, the probability of cutmix.
    public var switchProbability: Double
    /// The probability that a batch is mixed at all (timm's `mixup_prob`, 1 in DeiT).
    public var probability: Double
    /// Label smoothing ε: the target is `1 − ε + ε/K` on the label and `ε/K` elsewhere.
    public var smoothing: Double
    public var classes: Int

    public init(mixupAlpha: Double, cutmixAlpha: Double, switchProbability: Double, probability: Double = 1,
                smoothing: Double, classes: Int) {
        self.mixupAlpha = mixupAlpha
        self.cutmixAlpha = cutmixAlpha
        self.switchProbability = switchProbability
        self.probability = probability
        self.smoothing = smoothing
        self.classes = classes
    }

    /// What one batch's draw decided.
    public enum Draw: Equatable, Sendable {
        case none
        case mixup(lambda: Double)
        /// Rows `top..<bottom`, columns `left..<right` come from the flipped batch; `lambda` is the kept area fraction.
        case cutmix(lambda: Double, top: Int, bottom: Int, left: Int, right: Int)

        public var lambda: Double {
            switch self {
            case .none: return 1
            case .mixup(let lambda), .cutmix(let lambda, _, _, _, _): return lambda
            }
        }
    }

    /// The draw for a batch of S×S images (timm's `_params_per_batch` and `rand_bbox`).
    public func draw(imageSize: Int, using generator: inout SplitMix64) -> Draw {
        guard mixupAlpha > 0 || cutmixAlpha > 0, generator.nextUnitDouble() < probability else { return .none }
        let useCutmix = mixupAlpha > 0 && cutmixAlpha > 0 ? generator.nextUnitDouble() < switchProbability : cutmixAlpha > 0
        let alpha = useCutmix ? cutmixAlpha : mixupAlpha
        let lambda = Self.beta(alpha, using: &generator)
        guard useCutmix else { return .mixup(lambda: lambda) }
        let ratio = (1 - lambda).squareRoot()
        let (cut, S) = (Int(Double(imageSize) * ratio), imageSize)
        let cy = generator.integer(below: S), cx = generator.integer(below: S)
        let (top, bottom) = (min(max(cy - cut / 2, 0), S), min(max(cy + cut / 2, 0), S))
        let (left, right) = (min(max(cx - cut / 2, 0), S), min(max(cx + cut / 2, 0), S))
        return .cutmix(lambda: 1 - Double((bottom - top) * (right - left)) / Double(S * S), top: top, bottom: bottom,
                       left: left, right: right)
    }

    /// Mixes `images` ((B, C, S, S), in place) by `draw` and returns the (B, K) soft targets.
    public func apply(_ draw: Draw, images: inout [Float], labels: [Int32], imageSize: Int) -> [Float] {
        let B = labels.count
        let plane = imageSize * imageSize, perImage = images.count / max(B, 1)
        // The flipped batch is read from a copy, made only when the batch is mixed.
        let original = draw == .none ? [] : images
        switch draw {
        case .none: break
        case .mixup(let lambda):
            let (a, b) = (Float(lambda), Float(1 - lambda))
            for image in 0..<B {
                let other = B - 1 - image
                for i in 0..<perImage { images[image * perImage + i] = a * original[image * perImage + i] + b * original[other * perImage + i] }
            }
        case .cutmix(_, let top, let bottom, let left, let right):
            for image in 0..<B {
                let other = B - 1 - image
                for channel in 0..<(perImage / plane) {
                    for y in top..<bottom {
                        for x in left..<right {
                            let offset = channel * plane + y * imageSize + x
                            images[image * perImage + offset] = original[other * perImage + offset]
                        }
                    }
                }
            }
        }
        let off = smoothing / Double(classes), on = 1 - smoothing + off
        let lambda = draw.lambda
        var targets = [Float](repeating: 0, count: B * classes)
        for row in 0..<B {
            for k in 0..<classes {
                let first = Int(labels[row]) == k ? on : off
                let second = Int(labels[B - 1 - row]) == k ? on : off
                targets[row * classes + k] = Float(lambda * first + (1 - lambda) * second)
            }
        }
        return targets
    }

    /// A Beta(α, α) draw: X/(X + Y) with X, Y ~ Gamma(α) (Marsaglia–Tsang; α < 1 through
    /// Gamma(α + 1)·U^(1/α)).
    public static func beta(_ alpha: Double, using generator: inout SplitMix64) -> Double {
        let x = gamma(alpha, using: &generator), y = gamma(alpha, using: &generator)
        return x + y > 0 ? x / (x + y) : 0.5
    }

    static func gamma(_ alpha: Double, using generator: inout SplitMix64) -> Double {
        if alpha < 1 {
            let u = max(generator.nextUnitDouble(), 1e-300)
            return gamma(alpha + 1, using: &generator) * pow(u, 1 / alpha)
        }
        let d = alpha - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                x = Self.normal(using: &generator)
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = generator.nextUnitDouble()
            if u < 1 - 0.0331 * x * x * x * x || log(max(u, 1e-300)) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }

    static func normal(using generator: inout SplitMix64) -> Double {
        let u1 = (Double(generator.next() >> 11) + 1) * 0x1p-53
        let u2 = generator.nextUnitDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
