import Foundation

/// `metrics.jsonl` in the run folder: one JSON object per line, appended (a resumed run goes on
/// in the same file). `"type": "iteration"` lines carry loss, lr, m, img/s, the dense kNN
/// monitor and the per-layer gradient norms; `"type": "evaluation"` lines carry `knn_top1`.
final class MetricsLog {
    let handle: FileHandle

    init(url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw PretrainError("cannot create \(url.path); check that the run folder is writable")
            }
        }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

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
        try append(fields)
    }

    func writeEvaluation(epoch: Int, knnTop1: Double, seconds: Double) throws {
        try append([("type", "\"evaluation\""), ("epoch", String(epoch)), ("knn_top1", number(knnTop1)),
                    ("seconds", number(seconds))])
    }

    private func append(_ fields: [(String, String)]) throws {
        let line = "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n"
        try handle.write(contentsOf: Data(line.utf8))
    }

    /// JSON has no NaN or infinity: those become strings.
    private func number(_ value: Double) -> String {
        value.isFinite ? String(value) : "\"\(value)\""
    }
}
