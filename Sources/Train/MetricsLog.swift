import FileSystem
import Foundation

/// `metrics.jsonl` in the run folder: one JSON object per line, appended (a resumed run goes on
/// in the same file). `"type": "iteration"` lines carry loss, lr, m, img/s, the dense kNN
/// monitor and the per-layer gradient norms; `"type": "evaluation"` lines carry `knn_top1`.
final class MetricsLog {
    /// Nil on a data-parallel rank other than 0, which writes nothing but keeps the count.
    let file: AppendFile?
    let url: URL
    private var discardedLength = 0

    init(url: URL) throws {
        self.url = url
        file = try AppendFile(url)
    }

    /// A log that writes nothing (ranks other than 0) and counts the bytes it would have written.
    init(discardingFor url: URL) {
        self.url = url
        file = nil
    }

    /// The file's length in bytes (what a discarding log would have written).
    var length: Int { file?.length ?? discardedLength }

    /// Cuts the log back to `length` bytes.
    func truncate(to length: Int) throws {
        if let file { try file.truncate(to: length) } else { discardedLength = min(discardedLength, length) }
    }

    func write(_ metrics: IterationMetrics) throws {
        var fields: [(String, String)] = [
            ("type", "\"iteration\""), ("epoch", String(metrics.epoch)), ("batch", String(metrics.batch)),
            ("step", String(metrics.step)), ("loss", number(metrics.loss)), ("lr", number(metrics.learningRate)),
            ("m", number(metrics.momentum)), ("images_per_second", number(metrics.imagesPerSecond)), ("data_seconds", number(metrics.dataSeconds)),
        ]
        if let knn = metrics.knnMonitor { fields.append(("knn_monitor", number(knn))) }
        let norms = metrics.gradientNorms.map { "\"\($0.0)\":\(number($0.1))" }.joined(separator: ",")
        fields.append(("grad_norm", "{\(norms)}"))
        if !metrics.spikes.isEmpty {
            fields.append(("spikes", "[" + metrics.spikes.map { "\"\($0.layer)\"" }.joined(separator: ",") + "]"))
        }
        if let dip = metrics.knnDip {
            fields.append(("knn_dip", "{\"smoothed\":\(number(dip.smoothed)),\"maximum\":\(number(dip.maximum))}"))
        }
        try append(fields)
    }

    func writeEvaluation(epoch: Int, knnTop1: Double, seconds: Double) throws {
        try append([("type", "\"evaluation\""), ("epoch", String(epoch)), ("knn_top1", number(knnTop1)),
                    ("seconds", number(seconds))])
    }

    /// `"type": "rollback"`: the batch skipped, the step it failed at, the step restored, the lr
    /// factor from then on and why.
    func writeRollback(_ skip: SkippedBatch, restoredStep: Int, reason: String) throws {
        let quoted = String(decoding: try JSONEncoder().encode(reason), as: UTF8.self)
        try append([("type", "\"rollback\""), ("epoch", String(skip.epoch)), ("batch", String(skip.batch)),
                    ("step", String(skip.step)), ("restored_step", String(restoredStep)),
                    ("lr_scale", number(skip.learningRateScale)), ("reason", quoted)])
    }

    /// `"type": "iteration"` of a classifier run: epoch, batch, step, loss, lr, img/s.
    func writeClassifierIteration(_ m: ClassifierIteration) throws {
        try append([("type", "\"iteration\""), ("epoch", String(m.epoch)), ("batch", String(m.batch)),
                    ("step", String(m.step)), ("loss", number(m.loss)), ("lr", number(m.learningRate)),
                    ("images_per_second", number(m.imagesPerSecond))])
    }

    /// `"type": "epoch"` of a classifier run: the epoch's mean training loss and lr, the held-out
    /// loss, top-1 and top-5 (fractions), the best top-1 so far and its epoch.
    func writeClassifierEpoch(_ e: ClassifierEpoch) throws {
        try append([("type", "\"epoch\""), ("epoch", String(e.epoch)), ("train_loss", number(e.trainLoss)),
                    ("lr", number(e.learningRate)), ("val_loss", number(e.validationLoss)), ("top1", number(e.top1)),
                    ("top5", number(e.top5)), ("best_top1", number(e.bestTop1)), ("best_epoch", String(e.bestEpoch)),
                    ("seconds", number(e.seconds))])
    }

    private func append(_ fields: [(String, String)]) throws {
        let line = "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n"
        guard let file else {
            discardedLength += line.utf8.count
            return
        }
        do { try file.append(line) } catch let error as FileSystemError {
            throw error.adding(consequence: "The metrics up to this line are intact and the last checkpoint is loadable")
        }
    }

    /// JSON has no NaN or infinity: those become strings.
    private func number(_ value: Double) -> String {
        value.isFinite ? String(value) : "\"\(value)\""
    }
}

/// Reads a JSON-lines file (`metrics.jsonl`) one line at a time through a fixed buffer, so what a
/// reader keeps is its own business and memory does not grow with the file: the report, the end-
/// of-run alarm summary and the dip detector's replay on resume all read through it.
enum MetricsLines {
    /// Calls `body` with each non-empty line's 1-based number and its JSON object, nil when the
    /// line does not parse (a run killed mid-write leaves a torn last line). Returns false when
    /// the file cannot be opened.
    @discardableResult
    static func forEach(in url: URL, _ body: (Int, [String: Any]?) throws -> Void) throws -> Bool {
        let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var pending: [UInt8] = []
        var number = 0
        func emit(_ bytes: ArraySlice<UInt8>) throws {
            number += 1
            guard !bytes.isEmpty else { return }
            try body(number, try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        }
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, chunk) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            var start = 0
            for index in 0..<count where buffer[index] == 0x0A {
                if pending.isEmpty {
                    try emit(buffer[start..<index])
                } else {
                    pending += buffer[start..<index]
                    try emit(pending[...])
                    pending.removeAll(keepingCapacity: true)
                }
                start = index + 1
            }
            pending += buffer[start..<count]
        }
        if !pending.isEmpty { try emit(pending[...]) }
        return true
    }
}
