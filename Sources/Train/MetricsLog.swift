import FileSystem
import Foundation

/// `metrics.jsonl` in the run folder: one JSON object per line, appended (a resumed run goes on
/// in the same file). `"type": "iteration"` lines carry loss, lr, m, img/s, the dense kNN
/// monitor and the per-layer gradient norms; `"type": "evaluation"` lines carry `knn_top1`.
final class MetricsLog {
    let file: AppendFile

    init(url: URL) throws {
        file = try AppendFile(url)
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
        do { try file.append(line) } catch let error as FileSystemError {
            throw error.adding(consequence: "The metrics up to this line are intact and the last checkpoint is loadable")
        }
    }

    /// JSON has no NaN or infinity: those become strings.
    private func number(_ value: Double) -> String {
        value.isFinite ? String(value) : "\"\(value)\""
    }
}
