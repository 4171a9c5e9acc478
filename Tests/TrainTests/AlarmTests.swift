import Foundation
import Tensors
import Testing
@testable import Train

/// The instability alarms on synthetic series (the paper's Fig. 1 shape: a kNN curve that dips
/// and recovers) and on a real tiny run's metrics.
@Suite struct AlarmTests {
    /// `count` values around `level` with a seeded ±`noise`.
    func series(_ level: Double, _ count: Int, noise: Double = 0.02, seed: UInt64) -> [Double] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in level + Double.random(in: -noise...noise, using: &generator) }
    }

    func dips(in values: [Double], drop: Double = 0.05) -> [KNNDipDetector.Dip] {
        var detector = KNNDipDetector(drop: drop)
        return values.enumerated().compactMap { detector.record($1, iteration: $0 + 1) }
    }

    @Test func aNoisyPlateauAndARisingCurveRaiseNoAlarm() {
        #expect(dips(in: series(0.6, 400, seed: 1)).isEmpty)
        let rising = (0..<400).map { 0.2 + 0.6 * Double($0) / 400 } .enumerated().map { $1 + (($0 % 7) == 3 ? -0.03 : 0.01) }
        #expect(dips(in: rising).isEmpty)
    }

    /// The soak's monitor: 10⁴ batch accuracies of 32 samples at 10 % (binomial, ±5 points per
    /// batch): a fixed 5-point threshold flags dozens of "dips" in pure noise; the noise-aware one none.
    @Test func aLongNoisyMonitorRaisesNoAlarmButADipInItDoes() {
        var generator = SplitMix64(seed: 11)
        func batch(_ p: Double) -> Double { Double((0..<32).filter { _ in Double.random(in: 0..<1, using: &generator) < p }.count) / 32 }
        let noise = (0..<10_000).map { _ in batch(0.1) }
        var detector = KNNDipDetector(drop: 0.05)
        #expect(noise.enumerated().compactMap { detector.record($1, iteration: $0 + 1) }.isEmpty)
        #expect(detector.threshold > 0.05)
        // The same monitor at 40 % that falls to 10 % for 200 iterations: one dip.
        let dipping = (0..<2_000).map { _ in batch(0.4) } + (0..<200).map { _ in batch(0.1) } + (0..<500).map { _ in batch(0.4) }
        let found = dips(in: dipping)
        #expect(found.count == 1 && (2_001...2_040).contains(found.first?.iteration ?? 0), "\(found.map(\.iteration)) \(found)")
    }

    @Test func aSingleBadBatchIsSmoothedAway() {
        var values = series(0.6, 200, seed: 2)
        values[120] = 0
        #expect(dips(in: values).isEmpty)
    }

    @Test func twoDipsAndRecoveriesAreTwoAlarms() {
        // Up to 60 %, down to 45 % for 60 iterations, back to 62 %, down to 50 %, back.
        let values = series(0.6, 100, seed: 3) + series(0.45, 60, seed: 4) + series(0.62, 100, seed: 5)
            + series(0.50, 60, seed: 6) + series(0.62, 40, seed: 7)
        let found = dips(in: values)
        #expect(found.count == 2, "\(found)")
        guard found.count == 2 else { return }
        #expect((101...120).contains(found[0].iteration), "the first dip is flagged within a window of its start")
        #expect(abs(found[0].maximum - 0.6) < 0.02 && found[0].maximum - found[0].smoothed > 0.05)
        #expect((261...280).contains(found[1].iteration))
        // The same series with a 20-point threshold: no alarm.
        #expect(dips(in: values, drop: 0.2).isEmpty)
    }

    @Test func theSummaryCountsSpikesAndDipsFromTheMetricsLines() throws {
        let lines = try [
            #"{"type":"iteration","step":1,"spikes":[]}"#,
            #"{"type":"iteration","step":120,"spikes":["patch_embed","blocks.0"]}"#,
            #"{"type":"evaluation","epoch":1,"knn_top1":0.5}"#,
            #"{"type":"iteration","step":340,"knn_dip":{"smoothed":0.541,"maximum":0.613}}"#,
            #"{"type":"iteration","step":400,"spikes":["patch_embed"]}"#,
        ].map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(AlarmSummary(metricsLines: lines).description
            == "3 gradient spikes, first in patch_embed at iteration 120; 1 kNN dip, first at iteration 340 "
            + "(the monitor's mean 54.1%, 7.2 points below its running maximum 61.3%)")
        #expect(AlarmSummary(metricsLines: []).description == "no gradient spike; no kNN dip")
    }

    @Test func aRunEndsWithItsAlarmSummary() throws {
        let folder = try TinyRun.folder("alarms")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.spikeFactor = 1.0001   // every layer whose norm grows past its median spikes
        configuration.epochs = 4             // 16 iterations: a layer needs 10 before it can spike
        let summary = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(),
                                     runFolder: folder, workers: 2, report: { _ in }).run()
        let text = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        let spikes = text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["spikes"] as? [String]
        }.map(\.count).reduce(0, +)
        #expect(spikes > 0)
        #expect(summary.alarms.spikes == spikes)
        #expect(summary.alarms.description.hasPrefix("\(spikes) gradient spike"))
    }
}
