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
        let reader = MetadataReader(file: file, requiredKeys: configurationKeys)
        _ = try reader.text("stop_grad_conv1")
        let config = MoCoConfig(vit: try vitConfig(from: reader), mocoDim: try reader.integer("moco_dim"),
                                mocoMLPDim: try reader.integer("moco_mlp_dim"), temperature: temperature)
        try config.validate()
        return config
    }

    /// The ViT trunk described by `file`'s metadata (the keys of ``configurationKeys`` up to
    /// `mlp_ratio`, plus `stop_grad_conv1` and ``optionKeys`` where present), or nil when the
    /// metadata has no `embed_dim` (a file of another tool: then the shapes tell).
    public static func vitConfig(from file: SafetensorsFile) throws -> ViTConfig? {
        guard file.metadata["embed_dim"] != nil else { return nil }
        let config = try vitConfig(from: MetadataReader(file: file, requiredKeys: Array(configurationKeys.prefix(6))))
        try config.validate()
        return config
    }

    static func vitConfig(from reader: MetadataReader) throws -> ViTConfig {
        let source = reader.file.source
        let pooling: ViTConfig.Pooling
        switch reader.file.metadata["pooling"] {
        case nil, "cls", "token": pooling = .classToken
        case "avg": pooling = .globalAverage
        case let other?: throw ModelConfigError("\(source): metadata \"pooling\" must be \"cls\" or \"avg\", got \"\(other)\"")
        }
        let norm: ViTConfig.MLPNormalization = try reader.flag("vit_bn") ?? false ? .batchNorm : .layerNorm
        let positionEmbedding: ViTConfig.PositionEmbedding
        switch reader.file.metadata["pos_embed"] {
        case nil, "sincos", "learned": positionEmbedding = .sinCos
        case "none": positionEmbedding = .none
        case let other?: throw ModelConfigError("\(source): metadata \"pos_embed\" must be \"sincos\" or \"none\", got \"\(other)\"")
        }
        var vit = ViTConfig(imageSize: try reader.integer("img_size"), patchSize: try reader.integer("patch_size"),
                            embedDim: try reader.integer("embed_dim"), depth: try reader.integer("depth"),
                            heads: try reader.integer("num_heads"), mlpRatio: try reader.integer("mlp_ratio"),
                            stopGradConv1: try reader.flag("stop_grad_conv1") ?? false, pooling: pooling,
                            mlpNormalization: norm)
        vit.positionEmbedding = positionEmbedding
        return vit
    }

    /// `config` as metadata under ``configurationKeys`` (and ``optionKeys`` where set).
    public static func metadata(for config: MoCoConfig) -> [String: String] {
        metadata(for: config.vit).merging(["moco_dim": String(config.mocoDim), "moco_mlp_dim": String(config.mocoMLPDim),
                                           "stop_grad_conv1": config.vit.stopGradConv1 ? "1" : "0"]) { $1 }
    }

    /// A ViT trunk's metadata: ``configurationKeys`` up to `mlp_ratio`, and ``optionKeys`` where set.
    public static func metadata(for vit: ViTConfig) -> [String: String] {
        var options: [String: String] = [:]
        if vit.pooling == .globalAverage { options["pooling"] = "avg" }
        if vit.mlpNormalization == .batchNorm { options["vit_bn"] = "1" }
        if vit.positionEmbedding == .none { options["pos_embed"] = "none" }
        return options.merging(["img_size": String(vit.imageSize), "patch_size": String(vit.patchSize),
                "embed_dim": String(vit.embedDim), "depth": String(vit.depth), "num_heads": String(vit.heads),
                "mlp_ratio": String(vit.mlpRatio)]) { $1 }
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
    /// or a float, and may be absent (see ``SafetensorsFile/values(of:prefix:)``). A missing or mis-shaped
    /// tensor throws a ``SafetensorsError`` naming it.
    public static func initialValues(from file: SafetensorsFile, layout: MoCoParameters,
                                     prefix: String? = nil) throws -> (parameters: [Float], buffers: [Float]) {
        let prefix = prefix ?? detectPrefix(in: file, layout: layout)
        return (try file.values(of: layout.table, prefix: prefix), try file.values(of: layout.buffers, prefix: prefix))
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
        try writer.add(model.parameters.table, values: model.backend.download(model.parameterTensor))
        try writer.add(model.parameters.buffers, values: model.backend.download(model.bufferTensor))
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

extension SafetensorsFile {
    /// Every entry of `table`, read by name (`prefix` + name), into a flat buffer of its layout. A
    /// `num_batches_tracked` is read as an integer (PyTorch stores I64) or a float, and may be
    /// absent (PyTorch writes it and nothing reads it): then 0. A missing or mis-shaped tensor
    /// throws a ``SafetensorsError`` naming it.
    public func values(of table: ParameterTable, prefix: String = "") throws -> [Float] {
        var values = [Float](repeating: 0, count: table.count)
        let present = Set(names)
        for entry in table.entries {
            let name = prefix + entry.name
            let slice: [Float]
            if entry.name.hasSuffix("num_batches_tracked") {
                guard present.contains(name) else { continue }
                slice = try self.entry(named: name).dtype == .float32 ? floats(name, shape: entry.shape)
                    : int64s(name, shape: entry.shape).map(Float.init)
            } else {
                slice = try floats(name, shape: entry.shape)
            }
            values.replaceSubrange(entry.offset..<(entry.offset + entry.count), with: slice)
        }
        return values
    }
}

/// Reads a file's metadata values by key, with errors that name the file, the key and the keys a
/// weights file needs.
struct MetadataReader {
    let file: SafetensorsFile
    /// Listed in the error for a missing key.
    let requiredKeys: [String]

    func text(_ key: String) throws -> String {
        guard let text = file.metadata[key] else {
            throw ModelConfigError("\(file.source): metadata has no \"\(key)\"; a weights file needs the keys "
                + requiredKeys.joined(separator: ", ") + " (as tools/golden.py and `mocov3-cl step --output` write them)")
        }
        return text
    }

    func integer(_ key: String) throws -> Int {
        let text = try text(key)
        guard let number = MetadataValue.integer(text) else {
            throw ModelConfigError("\(file.source): metadata \"\(key)\" is \"\(text)\", not an integer")
        }
        return number
    }

    /// nil when the key is absent.
    func flag(_ key: String) throws -> Bool? {
        guard let text = file.metadata[key] else { return nil }
        guard let value = MetadataValue.flag(text) else {
            throw ModelConfigError("\(file.source): metadata \"\(key)\" must be 0 or 1 (or true/false), got \"\(text)\"")
        }
        return value
    }
}

/// Lenient reading of metadata values, which other tools write in their own spellings (Python's
/// `str(True)`, `str(4.0)`): what a weights file's `__metadata__` says, whoever wrote it.
public enum MetadataValue {
    /// `"1"`, `"true"`, `"True"` (any case) are true; `"0"`, `"false"`, `"False"` false; else nil.
    public static func flag(_ text: String) -> Bool? {
        switch text.trimmingCharacters(in: .whitespaces).lowercased() {
        case "1", "true": return true
        case "0", "false": return false
        default: return nil
        }
    }

    /// `"4"` or `"4.0"` is 4; `"4.5"`, `"four"` or an out-of-range value is nil.
    public static func integer(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let value = Int(trimmed) { return value }
        guard let value = Double(trimmed), value.isFinite, value == value.rounded(), abs(value) < 1e15 else { return nil }
        return Int(value)
    }
}
