import Foundation

/// The paper's Fig. 1 instability signal: the kNN curve "dips" (falls and recovers) while the loss
/// looks fine. The dense kNN monitor's per-batch accuracy is noisy, so the detector smooths it
/// with a moving mean over `window` values and flags a dip when that mean falls more than a
/// threshold below its running maximum; the dip ends once the mean is back within half of the
/// threshold, and only then can a new one start.
///
/// The threshold is `drop` (a fraction: 0.05 is 5 points) unless the monitor is too noisy for it:
/// a small batch or bank makes the per-batch accuracy jump by many points, and the running
/// maximum of a noisy moving mean drifts up with the run's length (by up to √(2 ln n) of the
/// mean's standard error over n values, and its minimum as far down). Then the threshold is
/// 1 + 2√(2 ln n) standard errors of the mean, the noise estimated from successive differences (a trend does not inflate it), so a
/// monitor that only jitters raises no alarm however long the run (a 10⁴-iteration soak at batch
/// 32 raised 77 with the fixed threshold).
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
    /// Exponential mean of (xᵢ − xᵢ₋₁)² / 2: the per-value noise variance.
    private var noiseVariance: Double?
    private var previous: Double?
    private var windows = 0

    public init(drop: Double = defaultDrop, window: Int = defaultWindow) {
        precondition(drop > 0 && window >= 1, "a dip needs a positive drop and a window of at least one value")
        self.drop = drop
        self.window = window
    }

    /// Feeds one monitor value; returns the dip that starts at `iteration`, if one does.
    public mutating func record(_ value: Double, iteration: Int) -> Dip? {
        guard value.isFinite else { return nil }
        if let previous {
            let sample = (value - previous) * (value - previous) / 2
            noiseVariance = noiseVariance.map { $0 + 0.01 * (sample - $0) } ?? sample
        }
        previous = value
        recent.append(value)
        if recent.count > window { recent.removeFirst() }
        guard recent.count == window else { return nil }
        let smoothed = recent.reduce(0, +) / Double(window)
        guard let maximum else {
            self.maximum = smoothed
            return nil
        }
        if smoothed > maximum { self.maximum = smoothed }
        windows += 1
        let threshold = self.threshold
        if inDip {
            if smoothed >= maximum - threshold / 2 { inDip = false }
            return nil
        }
        guard smoothed < maximum - threshold else { return nil }
        inDip = true
        return Dip(iteration: iteration, smoothed: smoothed, maximum: maximum)
    }

    /// The drop that counts as a dip now: `drop`, or more for a noisy monitor (see the type's notes).
    public var threshold: Double {
        let error = (noiseVariance ?? 0).squareRoot() / Double(window).squareRoot()
        return max(drop, (1 + 2 * (2 * log(max(Double(windows), 1))).squareRoot()) * error)
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
    /// `--on-nonfinite rollback`: the batches skipped, the first one's iteration.
    public var rollbacks = 0
    public var firstRollback: Int?

    public init() {}

    /// Counts the `spikes` and `knn_dip` fields of the iteration lines and the rollback lines.
    public init(metricsLines lines: [[String: Any]]) {
        for line in lines { add(line) }
    }

    /// The summary of the run folder's `metrics.jsonl`, read line by line (lines that do not parse are skipped).
    public init(folder: URL) {
        _ = try? MetricsLines.forEach(in: folder.appendingPathComponent("metrics.jsonl")) { _, object in
            if let object { add(object) }
        }
    }

    mutating func add(_ line: [String: Any]) {
        let step = line["step"] as? Int ?? 0
        switch line["type"] as? String {
        case "iteration":
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
        case "rollback":
            if firstRollback == nil { firstRollback = step }
            rollbacks += 1
        default: break
        }
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
        if let first = firstRollback {
            parts.append("\(rollbacks) rollback\(rollbacks == 1 ? "" : "s") from a non-finite iteration, first at iteration \(first)")
        }
        return parts.joined(separator: "; ")
    }
}
