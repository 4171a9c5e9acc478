import Foundation

/// The paper's Fig. 1 instability signal: the kNN curve "dips" (falls and recovers) while the loss
/// looks fine. The dense kNN monitor's per-batch accuracy is noisy, so the detector smooths it
/// with a moving mean over `window` values and flags a dip when that mean falls more than
/// `drop` (a fraction: 0.05 is 5 points) below its running maximum; the dip ends once the mean
/// is back within half of `drop`, and only then can a new one start.
public struct KNNDipDetector: Sendable {
    public struct Dip: Sendable, Equatable, CustomStringConvertible {
        /// The 1-based iteration at which the smoothed curve crossed the threshold.
        public let iteration: Int
        public let smoothed: Double
        public let maximum: Double

        public var description: String {
            String(format: "kNN monitor dip: its %d-value mean %.1f%% is %.1f points below its running maximum %.1f%%",
                   KNNDipDetector.defaultWindow, 100 * smoothed, 100 * (maximum - smoothed), 100 * maximum)
        }
    }

    public static let defaultWindow = 20
    public static let defaultDrop = 0.05

    public let drop: Double
    public let window: Int
    private var recent: [Double] = []
    private(set) var maximum: Double?
    private(set) var inDip = false

    public init(drop: Double = defaultDrop, window: Int = defaultWindow) {
        precondition(drop > 0 && window >= 1, "a dip needs a positive drop and a window of at least one value")
        self.drop = drop
        self.window = window
    }

    /// Feeds one monitor value; returns the dip that starts at `iteration`, if one does.
    public mutating func record(_ value: Double, iteration: Int) -> Dip? {
        guard value.isFinite else { return nil }
        recent.append(value)
        if recent.count > window { recent.removeFirst() }
        guard recent.count == window else { return nil }
        let smoothed = recent.reduce(0, +) / Double(window)
        guard let maximum else {
            self.maximum = smoothed
            return nil
        }
        if smoothed > maximum { self.maximum = smoothed }
        if inDip {
            if smoothed >= maximum - drop / 2 { inDip = false }
            return nil
        }
        guard smoothed < maximum - drop else { return nil }
        inDip = true
        return Dip(iteration: iteration, smoothed: smoothed, maximum: maximum)
    }
}

/// The end-of-run summary of a run's alarms, read back from its `metrics.jsonl` (so it covers
/// every resumed part): "3 gradient spikes, first in patch_embed at iteration 120; 1 kNN dip,
/// first at iteration 340 (…)".
public struct AlarmSummary: Sendable, CustomStringConvertible {
    public var spikes = 0
    public var firstSpike: (layer: String, iteration: Int)?
    public var dips = 0
    public var firstDip: (iteration: Int, smoothed: Double, maximum: Double)?

    public init() {}

    /// Counts the `spikes` and `knn_dip` fields of the iteration lines.
    public init(metricsLines lines: [[String: Any]]) {
        for line in lines where line["type"] as? String == "iteration" {
            let step = line["step"] as? Int ?? 0
            if let layers = line["spikes"] as? [String], !layers.isEmpty {
                if firstSpike == nil { firstSpike = (layers[0], step) }
                spikes += layers.count
            }
            if let dip = line["knn_dip"] as? [String: Any] {
                if firstDip == nil {
                    firstDip = (step, dip["smoothed"] as? Double ?? .nan, dip["maximum"] as? Double ?? .nan)
                }
                dips += 1
            }
        }
    }

    /// The summary of the run folder's `metrics.jsonl` (lines that do not parse are skipped).
    public init(folder: URL) {
        let text = (try? String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)) ?? ""
        self.init(metricsLines: text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        })
    }

    public var description: String {
        var parts: [String] = []
        if let first = firstSpike {
            parts.append("\(spikes) gradient spike\(spikes == 1 ? "" : "s"), first in \(first.layer) at iteration \(first.iteration)")
        } else {
            parts.append("no gradient spike")
        }
        if let first = firstDip {
            parts.append(String(format: "%d kNN dip%@, first at iteration %d (the monitor's mean %.1f%%, %.1f points "
                + "below its running maximum %.1f%%)", dips, dips == 1 ? "" : "s", first.iteration, 100 * first.smoothed,
                100 * (first.maximum - first.smoothed), 100 * first.maximum))
        } else {
            parts.append("no kNN dip")
        }
        return parts.joined(separator: "; ")
    }
}
