import Foundation
import Train

/// Shows a run: on a terminal a live progress line (epoch, iteration, img/s, loss, lr, m, kNN
/// monitor, ETA) rewritten every iteration, plus plain lines for events; otherwise plain log
/// lines every `printFrequency` iterations.
final class ProgressDisplay: @unchecked Sendable {
    let printFrequency: Int
    let epochs: Int
    let isTerminal = isatty(STDOUT_FILENO) != 0
    private var lineOpen = false
    /// Smoothed seconds per iteration, for the ETA.
    private var secondsPerIteration: Double?
    private var lastTime: Date?

    init(printFrequency: Int, epochs: Int) {
        self.printFrequency = printFrequency
        self.epochs = epochs
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .message(let text): log(text)
        case .checkpoint(let path):
            lastTime = nil   // the pause is not an iteration: keep it out of the ETA
            log("checkpoint: \(path)")
        case .evaluation(let epoch, let top1, let seconds):
            lastTime = nil
            log(String(format: "epoch %d: kNN top-1 %.2f%% on the held-out split (%.1f s)%@", epoch, 100 * top1, seconds,
                       epoch == 0 ? " (initialisation)" : ""))
        case .iteration(let m): iteration(m)
        }
    }

    private func iteration(_ m: IterationMetrics) {
        let now = Date()
        if let lastTime {
            let seconds = now.timeIntervalSince(lastTime)
            secondsPerIteration = secondsPerIteration.map { 0.9 * $0 + 0.1 * seconds } ?? seconds
        }
        lastTime = now
        let remaining = (epochs - m.epoch - 1) * m.batchesPerEpoch + (m.batchesPerEpoch - m.batch - 1)
        let eta = secondsPerIteration.map { Self.duration(Double(remaining) * $0) } ?? "-"
        var line = String(format: "epoch %d/%d  iter %d/%d  %.1f img/s  loss %.4f  lr %.3e  m %.5f",
                          m.epoch + 1, epochs, m.batch + 1, m.batchesPerEpoch, m.imagesPerSecond, m.loss,
                          m.learningRate, m.momentum)
        if let knn = m.knnMonitor { line += String(format: "  kNN-monitor %.1f%%", 100 * knn) }
        line += "  ETA \(eta)"
        for spike in m.spikes { log("warning: iteration \(m.step): \(spike)") }
        if isTerminal {
            print("\r\u{1B}[2K" + line, terminator: "")
            fflush(stdout)
            lineOpen = true
        } else if m.step % printFrequency == 0 || m.batch + 1 == m.batchesPerEpoch {
            print(line)
            fflush(stdout)
        }
    }

    func log(_ text: String) {
        if lineOpen {
            print("")
            lineOpen = false
        }
        print(text)
        fflush(stdout)
    }

    func finish() {
        if lineOpen { print("") }
        lineOpen = false
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        return total >= 3600 ? String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
            : String(format: "%d:%02d", total / 60, total % 60)
    }
}
