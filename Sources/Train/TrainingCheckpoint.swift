import Foundation
import Tensors
import Model

/// Where a run stands: what a checkpoint restores besides the tensors.
public struct TrainingPosition: Sendable, Equatable {
    /// Epoch of the next batch to run (0-based).
    public var epoch: Int
    /// Index of the next batch within that epoch.
    public var batch: Int
    /// Optimizer steps taken so far (AdamW's bias-correction count is `step + 1` for the next one).
    public var step: Int

    public init(epoch: Int = 0, batch: Int = 0, step: Int = 0) {
        self.epoch = epoch
        self.batch = batch
        self.step = step
    }
}

/// A pre-training checkpoint (`checkpoint_%04d.safetensors`, SPEC A.10 with safetensors instead
/// of pickles): both encoders, the predictor and BN buffers under the reference's `module.*`
/// names (loadable by `mocov3-cl step --weights` and by PyTorch), the optimizer state as
/// `optimizer.<key>.<name>` with torch's state keys (``Optimizer/state``: `exp_avg`, `exp_avg_sq`
/// for AdamW and LAMB, `momentum_buffer` for LARS and SGD), the dense kNN monitor's bank, and in the metadata
/// the run's configuration and position; the gradient monitor's recent norms (`monitor.grad_history.<layer>`,
/// float64 bit patterns as I64) and the length of `metrics.jsonl` at the save (`metrics_bytes`), to
/// which a resume cuts the file back. The data order and augmentations are pure functions of
/// (seed, epoch, sample), so the seed and the position are the whole RNG state.
public enum TrainingCheckpoint {
    public static let format = "mocov3-cl pretrain checkpoint 1"

    /// Writes atomically (temp file, fsync, rename): a crash mid-write leaves the previous file.
    public static func write(to url: URL, model: MoCoModel, optimizer: any Optimizer,
                             configuration: PretrainConfiguration, position: TrainingPosition,
                             bank: MemoryBank?, monitor: GradientMonitor? = nil, metricsBytes: Int? = nil,
                             skipped: [SkippedBatch] = []) throws {
        let layout = model.parameters
        var metadata = Checkpoint.metadata(for: layout.config)
        metadata["format"] = format
        metadata["pretrain_config"] = String(decoding: try JSONEncoder().encode(configuration), as: UTF8.self)
        metadata["epoch"] = String(position.epoch)
        metadata["batch"] = String(position.batch)
        metadata["step"] = String(position.step)
        if let metricsBytes { metadata["metrics_bytes"] = String(metricsBytes) }
        if !skipped.isEmpty { metadata["skipped_batches"] = String(decoding: try JSONEncoder().encode(skipped), as: UTF8.self) }
        var writer = SafetensorsWriter(metadata: metadata)
        try Checkpoint.addWeights(of: model, to: &writer)
        for (key, values) in try optimizer.stateValues(on: model.backend) {
            for entry in layout.table.entries where entry.trainable {
                try writer.add("optimizer.\(key).\(entry.name)", shape: entry.shape,
                               floats: Array(values[entry.offset..<(entry.offset + entry.count)]))
            }
        }
        if let bank {
            try writer.add("monitor.bank.features", shape: [bank.length, bank.width], floats: bank.features)
            try writer.add("monitor.bank.labels", shape: [bank.length], int32s: bank.labels)
            try writer.add("monitor.bank.pointer", shape: [], int64s: [Int64(bank.pointer)])
        }
        if let monitor {
            for (layer, norms) in zip(monitor.layers, monitor.recentNorms) {
                try writer.add(historyPrefix + layer.name, shape: [norms.count],
                               int64s: norms.map { Int64(bitPattern: $0.bitPattern) })
            }
        }
        try writer.write(to: url)
    }

    static let historyPrefix = "monitor.grad_history."

    /// A JSON decoding failure in a line, not a `DecodingError` dump.
    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "no \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
        case DecodingError.dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON"
                : "\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" is invalid"
        default: return "\(error)"
        }
    }

    /// A checkpoint read back and checked: everything ``write(to:model:configuration:position:bank:)`` stored.
    public struct Contents {
        /// The stored run, validated (its data path may be moved with ``PretrainPlan/withData(_:)``).
        public var plan: PretrainPlan
        public var configuration: PretrainConfiguration { plan.configuration }
        public var layout: MoCoParameters { plan.layout }
        public let position: TrainingPosition
        public let initial: (parameters: [Float], buffers: [Float])
        /// The optimizer state by torch key (``Optimizer/state``), each in
        /// ``MoCoParameters/trainableRegion`` layout.
        public let optimizerState: [String: [Float]]
        public let bank: MemoryBank?
        /// The gradient monitor's recent norms by layer name (empty for a checkpoint without them).
        public let gradientHistory: [String: [Double]]
        /// The length of `metrics.jsonl` when it was saved, if recorded.
        public let metricsBytes: Int?
        /// The batches that rollbacks skipped before the save (``NonFinitePolicy``).
        public let skippedBatches: [SkippedBatch]
        public let source: String
    }

    /// Reads a checkpoint; a file cut off mid-write, a foreign file or a missing tensor is an
    /// error naming the file and what is wrong.
    public static func read(_ url: URL) throws -> Contents {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(contentsOf: url) } catch {
            throw PretrainError("cannot read checkpoint \(url.path): \(error). If the run was interrupted while "
                + "writing, the previous checkpoint in the same folder is intact: resume from it")
        }
        guard file.metadata["format"] == format, let json = file.metadata["pretrain_config"] else {
            throw PretrainError("\(url.path) is not a mocov3-cl pretrain checkpoint (no \"format\": \"\(format)\" "
                + "in its metadata); to start from plain weights use `mocov3-cl step --weights`")
        }
        let configuration: PretrainConfiguration
        do { configuration = try JSONDecoder().decode(PretrainConfiguration.self, from: Data(json.utf8)) } catch {
            throw PretrainError("checkpoint \(url.path) holds a run configuration that does not read back "
                + "(\(Self.describe(error))); the file is damaged: resume from an earlier checkpoint")
        }
        func integer(_ key: String) throws -> Int {
            guard let value = file.metadata[key].flatMap(Int.init) else {
                throw PretrainError("checkpoint \(url.path) has no integer \"\(key)\" in its metadata")
            }
            return value
        }
        let position = TrainingPosition(epoch: try integer("epoch"), batch: try integer("batch"), step: try integer("step"))
        guard position.epoch >= 0, position.batch >= 0, position.step >= 0 else {
            throw PretrainError("checkpoint \(url.path) has a negative position (epoch \(position.epoch), batch "
                + "\(position.batch), step \(position.step)) in its metadata; it was not written by mocov3-cl")
        }
        let plan: PretrainPlan
        do { plan = try PretrainPlan(configuration) } catch {
            throw PretrainError("checkpoint \(url.path) holds a configuration this version rejects: \(error)")
        }
        let layout = plan.layout
        let initial = try Checkpoint.initialValues(from: file, layout: layout, prefix: "")
        // Optimizer state spans the trainable segments (``Optimizer/state``).
        let trainable = layout.segmentTable().extent
        func moments(_ prefix: String) throws -> [Float] {
            var values = [Float](repeating: 0, count: trainable)
            for entry in layout.table.entries where entry.trainable {
                values.replaceSubrange(entry.offset..<(entry.offset + entry.count),
                                       with: try file.floats(prefix + entry.name, shape: entry.shape))
            }
            return values
        }
        var state: [String: [Float]] = [:]
        for key in configuration.optimizer.stateKeys { state[key] = try moments("optimizer.\(key).") }
        var bank: MemoryBank?
        if file.names.contains("monitor.bank.features") {
            let labels = try file.int32s("monitor.bank.labels")
            let pointer = try file.int64s("monitor.bank.pointer", shape: [])
            do {
                bank = try MemoryBank(features: try file.floats("monitor.bank.features"), labels: labels,
                                      pointer: Int(pointer.first ?? 0), width: layout.config.vit.embedDim)
            } catch {
                throw PretrainError("checkpoint \(url.path): \(error)")
            }
        }
        var history: [String: [Double]] = [:]
        for name in file.names where name.hasPrefix(historyPrefix) {
            history[String(name.dropFirst(historyPrefix.count))] = try file.int64s(name)
                .map { Double(bitPattern: UInt64(bitPattern: $0)) }
        }
        let metricsBytes = file.metadata["metrics_bytes"].flatMap(Int.init)
        var skipped: [SkippedBatch] = []
        if let json = file.metadata["skipped_batches"] {
            do { skipped = try JSONDecoder().decode([SkippedBatch].self, from: Data(json.utf8)) } catch {
                throw PretrainError("checkpoint \(url.path) holds a list of skipped batches that does not read back "
                    + "(\(Self.describe(error))); the file is damaged: resume from an earlier checkpoint")
            }
        }
        return Contents(plan: plan, position: position, initial: initial, optimizerState: state, bank: bank,
                        gradientHistory: history, metricsBytes: metricsBytes.map { max($0, 0) }, skippedBatches: skipped,
                        source: url.path)
    }

    /// `--resume auto`: the run folder's checkpoints, newest position first.
    public static func candidates(in folder: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasPrefix("checkpoint_") && $0.hasSuffix(".safetensors") }
            .sorted(by: >)
            .map { folder.appendingPathComponent($0) }
    }

    /// `--resume auto`: the newest checkpoint in `folder` that reads back whole, and a warning for
    /// each newer one that did not (a file cut off by a crash mid-write is skipped, not fatal).
    public static func newestReadable(in folder: URL) throws -> (contents: Contents, warnings: [String]) {
        let candidates = candidates(in: folder)
        guard !candidates.isEmpty else {
            throw PretrainError("--resume auto: \(folder.path) holds no checkpoint_*.safetensors; start without --resume")
        }
        var problems: [String] = []
        for candidate in candidates {
            do { return (try read(candidate), problems) } catch {
                problems.append("skipping unreadable \(candidate.lastPathComponent): \(error)")
            }
        }
        throw PretrainError("--resume auto: no checkpoint in \(folder.path) could be read:\n" + problems.joined(separator: "\n"))
    }

    /// Whether `url` names a mid-epoch checkpoint (`checkpoint_EEEE_BBBBBB.safetensors`).
    public static func isMidEpoch(_ url: URL) -> Bool {
        url.lastPathComponent.dropFirst("checkpoint_".count).contains("_")
    }

    /// File name for a checkpoint at `position`: sorts by position. `checkpoint_0003.safetensors` after
    /// 3 completed epochs (the reference's `checkpoint_%04d` counts from 0, so its file of the same
    /// state is `checkpoint_0002`), with the batch added when mid-epoch.
    public static func fileName(for position: TrainingPosition) -> String {
        position.batch == 0 ? String(format: "checkpoint_%04d.safetensors", position.epoch)
            : String(format: "checkpoint_%04d_%06d.safetensors", position.epoch, position.batch)
    }
}
