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

    /// Prints nothing (a data-parallel rank other than 0: rank 0 speaks for the job).
    let quiet: Bool

    init(printFrequency: Int, epochs: Int, quiet: Bool = false) {
        self.printFrequency = printFrequency
        self.epochs = epochs
        self.quiet = quiet
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .message(let text), .rankMessage(let text): log(text)
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

    func handle(_ event: ClassifierEvent) {
        switch event {
        case .message(let text): log(text)
        case .checkpoint:
            // Written after every epoch (the epoch line says so) and on Ctrl-C (the stop line names it).
            lastTime = nil
        case .epoch(let e):
            lastTime = nil
            log(String(format: "epoch %d/%d: train loss %.4f (lr %.3e), held-out top-1 %.2f%%, top-5 %.2f%%, loss %.4f; "
                + "best top-1 %.2f%% (epoch %d); %.1f s; checkpoint written", e.epoch, epochs, e.trainLoss, e.learningRate, 100 * e.top1,
                100 * e.top5, e.validationLoss, 100 * e.bestTop1, e.bestEpoch, e.seconds))
        case .iteration(let m):
            let remaining = (epochs - m.epoch - 1) * m.batchesPerEpoch + (m.batchesPerEpoch - m.batch - 1)
            show(String(format: "epoch %d/%d  iter %d/%d  %.1f img/s  loss %.4f  lr %.3e", m.epoch + 1, epochs, m.batch + 1,
                        m.batchesPerEpoch, m.imagesPerSecond, m.loss, m.learningRate),
                 remaining: remaining, due: m.step % printFrequency == 0 || m.batch + 1 == m.batchesPerEpoch)
        }
    }

    /// A progress line with its ETA: rewritten in place on a terminal, else printed when `due`.
    private func show(_ text: String, remaining: Int, due: Bool) {
        let now = Date()
        if let lastTime {
            let seconds = now.timeIntervalSince(lastTime)
            secondsPerIteration = secondsPerIteration.map { 0.9 * $0 + 0.1 * seconds } ?? seconds
        }
        lastTime = now
        let line = text + "  ETA " + (secondsPerIteration.map { Self.duration(Double(remaining) * $0) } ?? "-")
        if isTerminal {
            print("\r\u{1B}[2K" + line, terminator: "")
            fflush(stdout)
            lineOpen = true
        } else if due {
            print(line)
            fflush(stdout)
        }
    }

    private func iteration(_ m: IterationMetrics) {
        let remaining = (epochs - m.epoch - 1) * m.batchesPerEpoch + (m.batchesPerEpoch - m.batch - 1)
        var line = String(format: "epoch %d/%d  iter %d/%d  %.1f img/s  loss %.4f  lr %.3e  m %.5f",
                          m.epoch + 1, epochs, m.batch + 1, m.batchesPerEpoch, m.imagesPerSecond, m.loss,
                          m.learningRate, m.momentum)
        if let knn = m.knnMonitor { line += String(format: "  kNN-monitor %.1f%%", 100 * knn) }
        for spike in m.spikes { log("warning: iteration \(m.step): \(spike)") }
        if let dip = m.knnDip { log("warning: iteration \(m.step): \(dip)") }
        show(line, remaining: remaining, due: m.step % printFrequency == 0 || m.batch + 1 == m.batchesPerEpoch)
    }

    func log(_ text: String) {
        guard !quiet else { return }
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
