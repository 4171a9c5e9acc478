import Foundation
import Model
import Tensors

/// A fine-tuning checkpoint (`checkpoint.safetensors` after every epoch and on request,
/// `model_best.safetensors` at the best top-1): the ViT under timm's names with its `head.*`
/// (loadable by timm as a classifier, and by `lincls`/`finetune --pretrained`), the AdamW state as
/// `optimizer.exp_avg.<name>` / `optimizer.exp_avg_sq.<name>` for every trainable tensor of the
/// trunk and the head, and in the metadata the trunk's configuration, the run's configuration
/// (`finetune_config`), the position and the best top-1.
public enum FineTuneCheckpoint {
    public static let format = "mocov3-cl finetune checkpoint 1"
    public static let lastName = "checkpoint.safetensors"
    public static let bestName = "model_best.safetensors"

    static func write(to url: URL, tuner: FineTuner) throws {
        var metadata = Checkpoint.metadata(for: tuner.trunk.layout.config)
        metadata["format"] = format
        metadata["finetune_config"] = String(decoding: try JSONEncoder().encode(tuner.configuration), as: UTF8.self)
        metadata.merge(positionMetadata(tuner.position, best: tuner.best, classes: tuner.classes)) { $1 }
        var writer = SafetensorsWriter(metadata: metadata)
        let backend = tuner.backend
        try LinearProbeCheckpoint.addTrunk(tuner.trunk.layout, parameters: tuner.trunk.parameterTensor,
                                           buffers: tuner.trunk.bufferTensor, on: backend, to: &writer)
        try LinearProbeCheckpoint.addHead(tuner.head, to: &writer)
        // Each optimizer's state holds its own group's tensors (the other slots stay zero).
        for (optimizer, _, entries) in tuner.optimizers {
            for (key, values) in try optimizer.stateValues(on: backend) {
                for entry in entries {
                    try writer.add("optimizer.\(key).\(entry.name)", shape: entry.shape,
                                   floats: Array(values[entry.offset..<(entry.offset + entry.count)]))
                }
            }
        }
        try writer.write(to: url)
    }

    public struct Contents {
        public let configuration: FineTuneConfiguration
        public let position: TrainingPosition
        public let classes: Int
        public let trunk: PretrainedViT
        public let head: PretrainedViT.Head
        /// Per optimizer of ``FineTuner/optimizers`` (in its order), the state by key.
        public let optimizerStates: [[String: [Float]]]
        public let bestTop1: Double
        public let bestEpoch: Int
        public let source: String
    }

    public static func read(_ url: URL) throws -> Contents {
        let (file, configuration, integer): (SafetensorsFile, FineTuneConfiguration, (String) throws -> Int)
            = try LinearProbeCheckpoint.open(url, format: format, configKey: "finetune_config", command: "finetune")
        let trunk = try PretrainedViT(file: file)
        let head = try LinearProbeCheckpoint.readHead(file, source: url.path)
        let headTable = ClassifierHead.layout(classes: head.classes, width: trunk.layout.config.embedDim)
        var states: [[String: [Float]]] = []
        for (_, entries, _) in FineTuner.optimizerGroups(trunk: trunk.layout, head: headTable) {
            let extent = entries.map { $0.offset + $0.count }.max() ?? 0
            var state: [String: [Float]] = [:]
            for key in OptimizerKind.adamw.stateKeys {
                var values = [Float](repeating: 0, count: extent)
                for entry in entries {
                    values.replaceSubrange(entry.offset..<(entry.offset + entry.count),
                                           with: try file.floats("optimizer.\(key).\(entry.name)", shape: entry.shape))
                }
                state[key] = values
            }
            states.append(state)
        }
        return Contents(configuration: configuration,
                        position: TrainingPosition(epoch: try integer("epoch"), batch: try integer("batch"), step: try integer("step")),
                        classes: head.classes, trunk: trunk, head: head, optimizerStates: states,
                        bestTop1: Double(file.metadata["best_top1"] ?? "0") ?? 0, bestEpoch: try integer("best_epoch"),
                        source: url.path)
    }
}
