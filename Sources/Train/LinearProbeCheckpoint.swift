import Foundation
import Model
import Tensors

/// A linear-probe checkpoint (`checkpoint.safetensors` after every epoch, `model_best.safetensors`
/// at the best top-1; the reference's `checkpoint.pth.tar` / `model_best.pth.tar`, SPEC A.10):
/// the full ViT under timm's names with its trained `head.weight` (K, C) and `head.bias` (K), so
/// timm loads it as a classifier; `head_norm.*` for `--bn-head`; the SGD state as
/// `optimizer.momentum_buffer.head.*`; and in the metadata the trunk's configuration keys, the
/// run's configuration (`lincls_config`), the position and the best top-1 (`best_acc1`, in %).
/// A raw-pixel probe's checkpoint holds the head alone.
public enum LinearProbeCheckpoint {
    public static let format = "mocov3-cl lincls checkpoint 1"
    public static let lastName = "checkpoint.safetensors"
    public static let bestName = "model_best.safetensors"

    /// Written atomically (temp file, fsync, rename).
    static func write(to url: URL, probe: LinearProbe) throws {
        var metadata = probe.trunk.map { Checkpoint.metadata(for: $0.layout.config) } ?? [:]
        metadata["format"] = format
        metadata["lincls_config"] = String(decoding: try JSONEncoder().encode(probe.configuration), as: UTF8.self)
        metadata["features"] = probe.configuration.features.rawValue
        metadata.merge(positionMetadata(probe.position, best: probe.best, classes: probe.classes)) { $1 }
        var writer = SafetensorsWriter(metadata: metadata)
        let backend = probe.backend
        if let trunk = probe.trunk {
            try addTrunk(trunk.layout, parameters: trunk.parameterTensor, buffers: trunk.bufferTensor, on: backend, to: &writer)
        }
        try addHead(probe.head, to: &writer)
        if let statistics = try probe.head.normalizationValues() {
            let names = ClassifierHead.Normalization.names
            try writer.add(names[0], shape: [probe.head.width], floats: statistics[0])
            try writer.add(names[1], shape: [probe.head.width], floats: statistics[1])
            try writer.add(names[2], shape: [], int64s: statistics[2].map { Int64($0) })
        }
        try writer.add(probe.head.table, values: backend.download(probe.optimizer.momentumBuffer),
                       prefix: "optimizer.momentum_buffer.")
        try writer.write(to: url)
    }

    /// Every trunk tensor under its timm name, and ViT-BN's buffers (`num_batches_tracked` as I64).
    static func addTrunk(_ layout: ViTLayout, parameters: Tensor, buffers: Tensor, on backend: any Backend,
                         to writer: inout SafetensorsWriter) throws {
        try writer.add(layout.table, values: backend.download(parameters))
        if !layout.buffers.entries.isEmpty { try writer.add(layout.buffers, values: backend.download(buffers)) }
    }

    /// `head.weight` (K, C) and `head.bias` (K).
    static func addHead(_ head: ClassifierHead, to writer: inout SafetensorsWriter) throws {
        let values = try head.values()
        try writer.add("head.weight", shape: [head.classes, head.width], floats: values.weight)
        try writer.add("head.bias", shape: [head.classes], floats: values.bias)
    }

    /// The head as the file stores it.
    static func readHead(_ file: SafetensorsFile, source: String) throws -> PretrainedViT.Head {
        let weight = try file.entry(named: "head.weight")
        guard weight.shape.count == 2 else {
            throw PretrainError("\(source): head.weight has shape \(weight.shape), not (classes, width)")
        }
        return PretrainedViT.Head(weight: try file.floats("head.weight", shape: weight.shape),
                                  bias: try file.floats("head.bias", shape: [weight.shape[0]]))
    }

    /// Opens a classifier checkpoint: the file, its configuration decoded from `configKey`, and
    /// a reader of non-negative integers in its metadata; errors name the file and what is wrong.
    static func open<Configuration: Decodable>(_ url: URL, format: String, configKey: String, command: String)
        throws -> (file: SafetensorsFile, configuration: Configuration, integer: (String) throws -> Int) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(contentsOf: url) } catch {
            throw PretrainError("cannot read checkpoint \(url.path): \(error). If the run was interrupted while "
                + "writing, \(bestName) in the same folder may be intact; or start again")
        }
        guard file.metadata["format"] == format, let json = file.metadata[configKey] else {
            throw PretrainError("\(url.path) is not a mocov3-cl \(command) checkpoint (no \"format\": \"\(format)\" in its "
                + "metadata); --resume continues a \(command) run, and --pretrained takes weights to start from")
        }
        let configuration: Configuration
        do { configuration = try JSONDecoder().decode(Configuration.self, from: Data(json.utf8)) } catch {
            throw PretrainError("\(url.path): its \(configKey) metadata does not decode: \(error)")
        }
        let integer: (String) throws -> Int = { key in
            guard let value = file.metadata[key].flatMap(MetadataValue.integer), value >= 0 else {
                throw PretrainError("checkpoint \(url.path) has no non-negative integer \"\(key)\" in its metadata")
            }
            return value
        }
        return (file, configuration, integer)
    }

    /// A checkpoint read back and checked.
    public struct Contents {
        public let configuration: LinearProbeConfiguration
        public let position: TrainingPosition
        public let classes: Int
        public let trunk: PretrainedViT?
        public let head: PretrainedViT.Head
        public let headNormalization: [[Float]]?
        /// `momentum_buffer` over the head's flat layout.
        public let optimizerState: [String: [Float]]
        public let bestTop1: Double
        public let bestEpoch: Int
        public let source: String
    }

    public static func read(_ url: URL) throws -> Contents {
        let (file, configuration, integer): (SafetensorsFile, LinearProbeConfiguration, (String) throws -> Int)
            = try open(url, format: format, configKey: "lincls_config", command: "lincls")
        let position = TrainingPosition(epoch: try integer("epoch"), batch: try integer("batch"), step: try integer("step"))
        let trunk = configuration.features == .rawPixels ? nil : try PretrainedViT(file: file)
        let head = try readHead(file, source: url.path)
        let (classes, width) = (head.classes, head.weight.count / max(head.classes, 1))
        var normalization: [[Float]]?
        if configuration.bnHead {
            let names = ClassifierHead.Normalization.names
            normalization = [try file.floats(names[0], shape: [width]), try file.floats(names[1], shape: [width]),
                             try file.int64s(names[2], shape: []).map(Float.init)]
        }
        // The momentum buffer over the head's segments (weight, then bias at its aligned offset).
        let table = ClassifierHead.layout(classes: classes, width: width)
        var momentum = [Float](repeating: 0, count: ClassifierHead.segments(of: table).extent)
        for entry in table.entries {
            momentum.replaceSubrange(entry.offset..<(entry.offset + entry.count),
                                     with: try file.floats("optimizer.momentum_buffer.\(entry.name)", shape: entry.shape))
        }
        return Contents(configuration: configuration, position: position, classes: classes, trunk: trunk, head: head,
                        headNormalization: normalization, optimizerState: ["momentum_buffer": momentum],
                        bestTop1: Double(file.metadata["best_top1"] ?? "0") ?? 0,
                        bestEpoch: try integer("best_epoch"), source: url.path)
    }
}
