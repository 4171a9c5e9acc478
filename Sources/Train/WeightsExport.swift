import Foundation
import Model
import Tensors

/// `mocov3-cl export`: a checkpoint's weights in the formats other tools read.
///
/// - `timm`: the backbone alone under timm's ViT names (`cls_token`, `pos_embed` with its zero
///   class-token row, `patch_embed.proj.*`, `blocks.N.*`, `norm.*`, and `head.*` for a
///   `lincls`/`finetune` checkpoint), as the reference's `convert_to_deit.py` makes it, with the
///   architecture in the metadata. Options timm's ViT cannot express are written with a note in
///   the metadata (`mocov3_notes`) and returned for stderr.
/// - `moco`: every `module.*` tensor of a pretrain checkpoint (both encoders, the predictor, BN
///   buffers with `num_batches_tracked`), the names the reference's own code loads, without the
///   optimizer state and the monitor's bank.
public enum WeightsExport {
    public enum Format: String, CaseIterable, Sendable { case timm, moco }

    public struct Result: Sendable {
        public let tensors: Int
        /// What a reader of the file must know (also in the file's metadata).
        public let notes: [String]
    }

    /// Writes `checkpoint`'s weights to `output` (atomically). An existing `output` is an error
    /// unless `overwrite`.
    public static func export(checkpoint: URL, format: Format, momentumEncoder: Bool = false, to output: URL,
                              overwrite: Bool = false) throws -> Result {
        if FileManager.default.fileExists(atPath: output.path), !overwrite {
            throw PretrainError("\(output.path) exists; pass --force to replace it, or choose another --output")
        }
        let file = try SafetensorsFile(contentsOf: checkpoint)
        switch format {
        case .timm: return try exportTimm(file, momentumEncoder: momentumEncoder, to: output)
        case .moco: return try exportMoCo(file, momentumEncoder: momentumEncoder, to: output)
        }
    }

    static func exportTimm(_ file: SafetensorsFile, momentumEncoder: Bool, to output: URL) throws -> Result {
        let vit = try PretrainedViT(file: file, prefix: momentumEncoder ? MoCoParameters.momentumEncoderPrefix : nil)
        let config = vit.layout.config
        var notes: [String] = []
        if config.mlpNormalization == .batchNorm {
            notes.append("ViT-BN: norm2 of every block is a BatchNorm1d over all tokens (weight, bias, running_mean, "
                + "running_var), not timm's LayerNorm; a timm VisionTransformer computes another function with these weights")
        }
        if config.pooling == .globalAverage {
            notes.append("global average pooling: the feature is the mean of the final-LN patch tokens, "
                + "forward_features(x)[:, 1:].mean(1); timm's global_pool='avg' averages before a separate fc_norm")
        }
        if config.positionEmbedding == .none {
            notes.append("no position embedding: pos_embed is written as zeros so that timm, which always adds one, "
                + "computes the same function")
        }
        var metadata = Checkpoint.metadata(for: config)
        metadata["format"] = "pt"
        metadata["exported_by"] = "mocov3-cl export --format timm"
        metadata["source"] = file.source
        if !notes.isEmpty { metadata["mocov3_notes"] = notes.joined(separator: " | ") }
        var writer = SafetensorsWriter(metadata: metadata)
        try writer.add(vit.layout.table, values: vit.parameters)
        if config.positionEmbedding == .none {
            try writer.add("pos_embed", shape: [1, config.tokens, config.embedDim],
                           floats: [Float](repeating: 0, count: config.tokens * config.embedDim))
        }
        try writer.add(vit.layout.buffers, values: vit.buffers)
        if let head = vit.head {
            try writer.add("head.weight", shape: [head.classes, config.embedDim], floats: head.weight)
            try writer.add("head.bias", shape: [head.classes], floats: head.bias)
        }
        try writer.write(to: output)
        return Result(tensors: writer.tensorCount, notes: notes)
    }

    static func exportMoCo(_ file: SafetensorsFile, momentumEncoder: Bool, to output: URL) throws -> Result {
        let names = file.names.filter { $0.hasPrefix("module.") }
        guard !names.isEmpty else {
            throw PretrainError("\(file.source) holds no module.* tensors: --format moco exports a pretrain checkpoint "
                + "(both encoders and the predictor); use --format timm for a backbone or a classifier")
        }
        // Validates the configuration and that every tensor of the model is there.
        let config = try Checkpoint.config(from: file, temperature: 0.2)
        let layout = try MoCoParameters(config)
        _ = try Checkpoint.initialValues(from: file, layout: layout, prefix: "")
        var metadata = file.metadata.filter { (Checkpoint.configurationKeys + Checkpoint.optionKeys).contains($0.key) }
        metadata["exported_by"] = "mocov3-cl export --format moco"
        metadata["source"] = file.source
        var writer = SafetensorsWriter(metadata: metadata)
        for name in names {
            let entry = try file.entry(named: name)
            if entry.dtype == .int64 {
                try writer.add(name, shape: entry.shape, int64s: try file.int64s(name))
            } else {
                try writer.add(name, shape: entry.shape, floats: try file.floats(name))
            }
        }
        try writer.write(to: output)
        return Result(tensors: writer.tensorCount, notes: momentumEncoder
            ? ["--encoder applies to --format timm; the moco format holds both encoders"] : [])
    }
}
