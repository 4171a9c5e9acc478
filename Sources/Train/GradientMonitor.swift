import Foundation
import Tensors
import Model

/// Per-layer gradient norms every iteration and a warning when a layer's norm jumps far above
/// its recent median: the paper's Fig. 4 shows instability starts as spikes in the first layer's
/// gradient, a few iterations before the kNN curve dips.
///
/// Layers are groups of trainable tensors in forward order: `patch_embed` (when trained),
/// `cls_token`, `blocks.0` … `blocks.{depth−1}`, `norm`, `head` (projector), `predictor`.
public final class GradientMonitor {
    public struct Layer: Sendable {
        public let name: String
        /// Indices into the per-tensor segments.
        let tensorIndices: [Int]
    }

    public struct Spike: Sendable, CustomStringConvertible {
        public let layer: String
        public let norm: Double
        public let median: Double
        public var description: String {
            "gradient spike in \(layer): norm \(format(norm)) is \(format(norm / median))× its recent median \(format(median))"
        }
    }

    public let layers: [Layer]
    /// Trainable tensors, in the order of the segments (layout order).
    public let tensorNames: [String]
    let factor: Double
    let window: Int
    private var history: [[Double]]

    /// - Parameter layout: its trainable tensors, in the order of ``MoCoModel/trainableSegments``
    ///   (the order of ``MoCoTrainingStep/Outcome/squaredNorms``).
    public init(layout: MoCoParameters, spikeFactor: Double, window: Int = 50) {
        let trainable = layout.table.entries.filter(\.trainable)
        tensorNames = trainable.map(\.name)
        factor = spikeFactor
        self.window = window
        var order: [String] = []
        var members: [String: [Int]] = [:]
        for (index, entry) in trainable.enumerated() {
            let layer = Self.layerName(of: entry.name)
            if members[layer] == nil { order.append(layer) }
            members[layer, default: []].append(index)
        }
        layers = order.map { Layer(name: $0, tensorIndices: members[$0]!) }
        history = Array(repeating: [], count: layers.count)
    }

    /// `module.base_encoder.blocks.3.attn.qkv.weight` → `blocks.3`; `…head.4.weight` → `head`;
    /// `module.predictor.0.weight` → `predictor`.
    static func layerName(of name: String) -> String {
        if name.hasPrefix(MoCoParameters.predictorPrefix) { return "predictor" }
        let relative = name.hasPrefix(MoCoParameters.baseEncoderPrefix)
            ? String(name.dropFirst(MoCoParameters.baseEncoderPrefix.count)) : name
        let parts = relative.split(separator: ".")
        if parts.first == "blocks", parts.count > 1 { return "blocks.\(parts[1])" }
        return String(parts.first ?? "")
    }

    /// Layer norms from per-tensor squared norms.
    public func layerNorms(_ squared: [Float]) -> [Double] {
        layers.map { layer in layer.tensorIndices.reduce(0.0) { $0 + Double(squared[$1]) }.squareRoot() }
    }

    /// Records this iteration's layer norms; returns the layers that spiked. A layer needs 10
    /// finite values of history before it can spike.
    public func record(_ norms: [Double]) -> [Spike] {
        var spikes: [Spike] = []
        for (index, norm) in norms.enumerated() where norm.isFinite {
            let recent = history[index]
            if recent.count >= 10 {
                let median = recent.sorted()[recent.count / 2]
                if median > 0, norm > factor * median {
                    spikes.append(Spike(layer: layers[index].name, norm: norm, median: median))
                }
            }
            history[index].append(norm)
            if history[index].count > window { history[index].removeFirst() }
        }
        return spikes
    }

    /// The recent norms per layer (oldest first), which decide the next spikes: a checkpoint
    /// saves them and a resumed run restores them, so its spike warnings are the uninterrupted run's.
    public var recentNorms: [[Double]] {
        get { history }
        set {
            precondition(newValue.count == layers.count, "\(newValue.count) histories for \(layers.count) layers")
            history = newValue.map { Array($0.suffix(window)) }
        }
    }

    /// The first trainable tensor (forward order) whose squared norm is not finite.
    public func firstNonFinite(_ squared: [Float]) -> String? {
        squared.firstIndex { !$0.isFinite }.map { tensorNames[$0] }
    }
}

func format(_ value: Double) -> String {
    if value == 0 { return "0" }
    let magnitude = abs(value)
    if magnitude >= 1e4 || magnitude < 1e-3 { return String(format: "%.3e", value) }
    return String(format: magnitude >= 100 ? "%.1f" : "%.4g", value)
}
