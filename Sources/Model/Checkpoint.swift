import Foundation
import Tensors

/// Reading and writing MoCo v3 weights as safetensors, by the reference's DDP names (SPEC A.10).
///
/// The configuration travels in `__metadata__` as string values under tools/golden.py's keys
/// (`img_size`, `patch_size`, `embed_dim`, `depth`, `num_heads`, `mlp_ratio`, `moco_dim`,
/// `moco_mlp_dim`, `stop_grad_conv1`), so a file written here can be read back as weights. The
/// ablation options add ``optionKeys`` only where set: `pooling = "avg"` (global average
/// pooling), `vit_bn = "1"` (ViT-BN) and `pos_embed = "none"` (no position embedding), as `tools/golden.py --pooling avg / --vit-bn` writes them.
/// Tensors are found by name, optionally under a prefix (the golden fixture stores its initial
/// weights as `init.module.base_encoder.cls_token`, …); file order does not matter.
///
/// ```swift
/// let file = try SafetensorsFile(contentsOf: url)
/// let config = try Checkpoint.config(from: file, temperature: 0.2)
/// let layout = try MoCoParameters(config)
/// let initial = try Checkpoint.initialValues(from: file, layout: layout)
/// ```
public enum Checkpoint {
    /// The metadata keys that define the model.
    public static let configurationKeys = ["img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                           "moco_dim", "moco_mlp_dim", "stop_grad_conv1"]
    /// Optional keys; absent means the reference's choice (class token, LayerNorm).
    public static let optionKeys = ["pooling", "vit_bn", "pos_embed"]

    /// The model configuration stored in `file`'s metadata; `temperature` is not part of it.
    public static func config(from file: SafetensorsFile, temperature: Double) throws -> MoCoConfig {
        func value(_ key: String) throws -> Int {
            guard let text = file.metadata[key] else {
                throw ModelConfigError("\(file.source): metadata has no \"\(key)\"; a weights file needs the keys "
                    + configurationKeys.joined(separator: ", ") + " (as tools/golden.py and `mocov3-cl step --output` write them)")
            }
            guard let number = Int(text) else {
                throw ModelConfigError("\(file.source): metadata \"\(key)\" is \"\(text)\", not an integer")
            }
            return number
        }
        let stopGradient = try value("stop_grad_conv1")
        guard stopGradient == 0 || stopGradient == 1 else {
            throw ModelConfigError("\(file.source): metadata \"stop_grad_conv1\" must be 0 or 1, got \(stopGradient)")
        }
        let pooling: ViTConfig.Pooling
        switch file.metadata["pooling"] {
        case nil, "cls": pooling = .classToken
        case "avg": pooling = .globalAverage
        case let other?: throw ModelConfigError("\(file.source): metadata \"pooling\" must be \"cls\" or \"avg\", got \"\(other)\"")
        }
        let norm: ViTConfig.MLPNormalization
        switch file.metadata["vit_bn"] {
        case nil, "0": norm = .layerNorm
        case "1": norm = .batchNorm
        case let other?: throw ModelConfigError("\(file.source): metadata \"vit_bn\" must be 0 or 1, got \"\(other)\"")
        }
        let positionEmbedding: ViTConfig.PositionEmbedding
        switch file.metadata["pos_embed"] {
        case nil, "sincos": positionEmbedding = .sinCos
        case "none": positionEmbedding = .none
        case let other?: throw ModelConfigError("\(file.source): metadata \"pos_embed\" must be \"sincos\" or \"none\", got \"\(other)\"")
        }
        var vit = ViTConfig(imageSize: try value("img_size"), patchSize: try value("patch_size"),
                            embedDim: try value("embed_dim"), depth: try value("depth"), heads: try value("num_heads"),
                            mlpRatio: try value("mlp_ratio"), stopGradConv1: stopGradient == 1, pooling: pooling,
                            mlpNormalization: norm)
        vit.positionEmbedding = positionEmbedding
        let config = MoCoConfig(vit: vit, mocoDim: try value("moco_dim"), mocoMLPDim: try value("moco_mlp_dim"),
                                temperature: temperature)
        try config.validate()
        return config
    }

    /// `config` as metadata under ``configurationKeys`` (and ``optionKeys`` where set).
    public static func metadata(for config: MoCoConfig) -> [String: String] {
        let vit = config.vit
        var options: [String: String] = [:]
        if vit.pooling == .globalAverage { options["pooling"] = "avg" }
        if vit.mlpNormalization == .batchNorm { options["vit_bn"] = "1" }
        if vit.positionEmbedding == .none { options["pos_embed"] = "none" }
        return options.merging(["img_size": String(vit.imageSize), "patch_size": String(vit.patchSize),
                "embed_dim": String(vit.embedDim), "depth": String(vit.depth), "num_heads": String(vit.heads),
                "mlp_ratio": String(vit.mlpRatio), "moco_dim": String(config.mocoDim),
                "moco_mlp_dim": String(config.mocoMLPDim), "stop_grad_conv1": vit.stopGradConv1 ? "1" : "0"]) { $1 }
    }

    /// The prefix under which `file` stores `layout`'s tensors: "" when the first tensor is there
    /// under its plain name, else `init.` (the golden fixture) when it is there under that.
    public static func detectPrefix(in file: SafetensorsFile, layout: MoCoParameters) -> String {
        guard let first = layout.table.entries.first?.name else { return "" }
        let names = Set(file.names)
        if names.contains(first) { return "" }
        return names.contains("init." + first) ? "init." : ""
    }

    /// Every parameter and BN buffer of `layout`, read by name (`prefix` + name) into the flat
    /// layout `MoCoModel` takes. `num_batches_tracked` is read as an integer (PyTorch stores I64)
    /// or a float. A missing or mis-shaped tensor throws a ``SafetensorsError`` naming it.
    public static func initialValues(from file: SafetensorsFile, layout: MoCoParameters,
                                     prefix: String? = nil) throws -> (parameters: [Float], buffers: [Float]) {
        let prefix = prefix ?? detectPrefix(in: file, layout: layout)
        var parameters = [Float](repeating: 0, count: layout.table.count)
        for entry in layout.table.entries {
            let values = try file.floats(prefix + entry.name, shape: entry.shape)
            parameters.replaceSubrange(entry.offset..<(entry.offset + entry.count), with: values)
        }
        var buffers = [Float](repeating: 0, count: layout.buffers.count)
        for entry in layout.buffers.entries {
            let name = prefix + entry.name
            let values: [Float]
            if entry.name.hasSuffix("num_batches_tracked"), try file.entry(named: name).dtype == .int64 {
                values = try file.int64s(name, shape: entry.shape).map(Float.init)
            } else {
                values = try file.floats(name, shape: entry.shape)
            }
            buffers.replaceSubrange(entry.offset..<(entry.offset + entry.count), with: values)
        }
        return (parameters, buffers)
    }

    /// The model's state after a step, in a writer: `loss` [1], `q1`, `q2`, `k1`, `k2` (B, d),
    /// `grad.<name>` for every trainable tensor, then every parameter and BN buffer under its own
    /// name (`num_batches_tracked` as I64 [], as PyTorch saves it).
    public static func stepWriter(model: MoCoModel, loss: Float, metadata: [String: String]) throws -> SafetensorsWriter {
        let layout = model.parameters
        let backend = model.backend
        var writer = SafetensorsWriter(metadata: metadata)
        try writer.add("loss", shape: [1], floats: [loss])
        let outputShape = [model.batchSize, layout.config.mocoDim]
        for (name, tensor) in [("q1", model.q1), ("q2", model.q2), ("k1", model.k1), ("k2", model.k2)] {
            try writer.add(name, shape: outputShape, floats: try backend.download(tensor))
        }
        let gradients = try backend.download(model.gradientTensor)
        for entry in layout.table.entries where entry.trainable {
            try writer.add("grad." + entry.name, shape: entry.shape,
                           floats: Array(gradients[entry.offset..<(entry.offset + entry.count)]))
        }
        try addWeights(of: model, to: &writer)
        return writer
    }

    /// Every parameter and BN buffer of `model` under its own name (`num_batches_tracked` as I64 [],
    /// as PyTorch saves it): what a checkpoint or an export needs to rebuild the model.
    public static func addWeights(of model: MoCoModel, to writer: inout SafetensorsWriter) throws {
        let layout = model.parameters
        let parameters = try model.backend.download(model.parameterTensor)
        for entry in layout.table.entries {
            try writer.add(entry.name, shape: entry.shape, floats: Array(parameters[entry.offset..<(entry.offset + entry.count)]))
        }
        let buffers = try model.backend.download(model.bufferTensor)
        for entry in layout.buffers.entries {
            let values = Array(buffers[entry.offset..<(entry.offset + entry.count)])
            if entry.name.hasSuffix("num_batches_tracked") {
                try writer.add(entry.name, shape: entry.shape, int64s: values.map { Int64($0) })
            } else {
                try writer.add(entry.name, shape: entry.shape, floats: values)
            }
        }
    }

    /// Two views of `batchSize` standard-normal images (B, channels, S, S), reproducible from `seed`.
    public static func randomViews(config: ViTConfig, batchSize: Int, seed: UInt64) -> (x1: [Float], x2: [Float]) {
        let count = batchSize * config.channels * config.imageSize * config.imageSize
        var generator = SplitMix64(seed: seed &+ 0x9e37_79b9_7f4a_7c15)
        let x1 = (0..<count).map { _ in Float(generator.nextGaussian()) }
        let x2 = (0..<count).map { _ in Float(generator.nextGaussian()) }
        return (x1, x2)
    }
}
