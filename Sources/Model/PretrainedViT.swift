import Foundation
import Tensors

/// A ViT trunk (and its classification head, where the file has one) read by name from any
/// weights file a user has: a `pretrain` checkpoint (moco-v3 names, `module.base_encoder.*`
/// minus the projector, as `main_lincls.py` loads it, SPEC A.8), a `lincls`/`finetune`
/// checkpoint, or a timm/DeiT ViT (`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.*`,
/// `norm.*`, optional `head.*`; also under `module.` or `model.`).
///
/// The configuration comes from the file's metadata when it has one (read leniently, see
/// ``MetadataValue``), else from the tensor shapes plus `heads`, which shapes cannot give:
/// MoCo v3's ViT-S has 12 heads and timm's 6 with identical tensors (SPEC A.2).
public struct PretrainedViT {
    /// What kind of file the weights came from.
    public enum Origin: String, Sendable {
        case pretrain = "a MoCo v3 pre-training checkpoint"
        case classifier = "a mocov3-cl lincls/finetune checkpoint"
        case timm = "a timm/DeiT ViT"
    }

    /// A classification head: weight (K, C), bias (K).
    public struct Head: Sendable {
        public let weight: [Float]
        public let bias: [Float]
        public var classes: Int { bias.count }

        public init(weight: [Float], bias: [Float]) {
            self.weight = weight
            self.bias = bias
        }
    }

    public let layout: ViTLayout
    /// In `layout.table` order and offsets.
    public let parameters: [Float]
    /// In `layout.buffers` order (ViT-BN's running statistics; empty otherwise).
    public let buffers: [Float]
    public let head: Head?
    public let origin: Origin
    public let source: String
    /// The prefix the trunk's names carry in the file (`module.base_encoder.`, `module.`, or "").
    public let prefix: String

    /// Prefixes tried in order; the first under which the file has a `cls_token` is the trunk's.
    public static let prefixes = ["module.base_encoder.", "base_encoder.", "module.", "model.", ""]

    /// Reads the trunk from `file`.
    ///
    /// - Parameter heads: the attention heads, required when the metadata does not say; if
    ///   both do, they must agree.
    ///   - prefix: read the trunk under this prefix (`module.momentum_encoder.` for the momentum
    ///     encoder) instead of the first of ``prefixes`` that has one.
    public init(file: SafetensorsFile, heads: Int? = nil, prefix requested: String? = nil) throws {
        source = file.source
        let names = Set(file.names)
        if let requested, !names.contains(requested + "cls_token") {
            throw ModelConfigError("\(file.source) has no ViT trunk under \"\(requested)\" (no \(requested)cls_token); "
                + (requested.contains("momentum") ? "only pretrain checkpoints hold a momentum encoder" : "check the prefix"))
        }
        guard let prefix = requested ?? Self.prefixes.first(where: { names.contains($0 + "cls_token") }) else {
            throw Self.noTrunkError(file)
        }
        self.prefix = prefix
        if prefix.hasSuffix("base_encoder.") || prefix.hasSuffix("momentum_encoder.") {
            origin = .pretrain
        } else if let format = file.metadata["format"], format.hasPrefix("mocov3-cl lincls") || format.hasPrefix("mocov3-cl finetune") {
            origin = .classifier
        } else {
            origin = .timm
        }
        var config = try Self.config(of: file, prefix: prefix, heads: heads)
        config.stopGradConv1 = false
        layout = try ViTLayout(config)

        // Refuse tensors of another ViT variant, and name every missing one.
        let trunkNames = names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
            .filter { !$0.hasPrefix("head.") && !$0.hasPrefix("head_norm.") }
        let known = Set(layout.table.entries.map(\.name) + layout.buffers.entries.map(\.name))
        let roots = ["cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.", "fc_norm.", "norm_pre.", "reg_token",
                     "dist_token", "head_dist.", "mask_token", "attn_pool."]
        let foreign = trunkNames.filter { name in !known.contains(name) && roots.contains { name.hasPrefix($0) } }.sorted()
        if !foreign.isEmpty {
            throw ModelConfigError("\(source) is a ViT of another architecture: it has "
                + foreign.prefix(5).map { prefix + $0 }.joined(separator: ", ") + (foreign.count > 5 ? " and \(foreign.count - 5) more" : "")
                + ", which mocov3-cl's ViT (pre-LN blocks, class token, final LayerNorm, no LayerScale, distillation or "
                + "register tokens) does not have")
        }
        let missing = layout.table.entries.map(\.name).filter { !names.contains(prefix + $0) }
        if !missing.isEmpty {
            throw ModelConfigError("\(source) lacks \(missing.count) backbone tensor(s) of a \(config.depth)-block, "
                + "\(config.embedDim)-wide ViT: " + missing.prefix(6).map { prefix + $0 }.joined(separator: ", ")
                + (missing.count > 6 ? ", …" : "") + ". Is it a complete ViT checkpoint?")
        }
        parameters = try file.values(of: layout.table, prefix: prefix)
        buffers = try file.values(of: layout.buffers, prefix: prefix)
        if names.contains(prefix + "head.weight") {
            let weight = try file.entry(named: prefix + "head.weight")
            guard weight.shape.count == 2, weight.shape[1] == config.embedDim, weight.shape[0] > 0 else {
                throw ModelConfigError("\(source): \(prefix)head.weight has shape \(weight.shape); a classification head "
                    + "of this \(config.embedDim)-wide ViT is (classes, \(config.embedDim))")
            }
            let classes = weight.shape[0]
            head = Head(weight: try file.floats(prefix + "head.weight", shape: [classes, config.embedDim]),
                        bias: try file.floats(prefix + "head.bias", shape: [classes]))
        } else {
            head = nil
        }
    }

    /// The trunk's configuration: the metadata's, else the shapes' with `heads`.
    static func config(of file: SafetensorsFile, prefix: String, heads: Int?) throws -> ViTConfig {
        if var config = try Checkpoint.vitConfig(from: file) {
            if let heads, heads != config.heads {
                throw ModelConfigError("--heads \(heads) contradicts \(file.source), whose metadata says num_heads "
                    + "\(config.heads); drop --heads")
            }
            if file.metadata["stop_grad_conv1"] == nil { config.stopGradConv1 = false }
            // Metadata that does not say `vit_bn` (another tool's keys): the running statistics tell.
            if file.metadata["vit_bn"] == nil, file.names.contains(prefix + "blocks.0.norm2.running_mean") {
                config.mlpNormalization = .batchNorm
            }
            return config
        }
        func shape(_ name: String) throws -> [Int] { try file.entry(named: prefix + name).shape }
        let classToken = try shape("cls_token")
        let patch = try shape("patch_embed.proj.weight")
        guard classToken.count == 3, classToken[0] == 1, classToken[1] == 1, patch.count == 4, patch[0] == classToken[2],
              patch[2] == patch[3] else {
            throw ModelConfigError("\(file.source): \(prefix)cls_token \(classToken) and \(prefix)patch_embed.proj.weight "
                + "\(patch) are not a ViT's (1, 1, C) and (C, channels, P, P)")
        }
        let (C, P) = (classToken[2], patch[2])
        let blockIndices = Set(file.names.compactMap { name -> Int? in
            guard name.hasPrefix(prefix + "blocks.") else { return nil }
            return Int(name.dropFirst(prefix.count + 7).prefix { $0 != "." })
        })
        let depth = blockIndices.count
        guard depth > 0, blockIndices == Set(0..<depth) else {
            throw ModelConfigError("\(file.source): the blocks are numbered \(blockIndices.sorted()); expected 0…N−1")
        }
        let hidden = try shape("blocks.0.mlp.fc1.weight")
        guard hidden.count == 2, hidden[1] == C, hidden[0] % C == 0 else {
            throw ModelConfigError("\(file.source): \(prefix)blocks.0.mlp.fc1.weight has shape \(hidden); an MLP of a "
                + "\(C)-wide ViT is (r·\(C), \(C)) for an integer ratio r")
        }
        var config = ViTConfig(imageSize: P, patchSize: P, embedDim: C, depth: depth, heads: 1,
                               mlpRatio: hidden[0] / C, channels: patch[1])
        if file.names.contains(prefix + "pos_embed") {
            let table = try shape("pos_embed")
            let grid = Int(Double(max(table.count == 3 ? table[1] - 1 : 0, 0)).squareRoot().rounded())
            guard table.count == 3, table[0] == 1, table[2] == C, grid > 0, grid * grid == table[1] - 1 else {
                throw ModelConfigError("\(file.source): \(prefix)pos_embed has shape \(table); expected (1, 1 + g², \(C)) "
                    + "with the class token's row first and a square g×g grid of patches")
            }
            config.imageSize = grid * P
        } else {
            throw ModelConfigError("\(file.source) has neither configuration metadata nor a pos_embed, so its image size "
                + "is unknown; write the metadata keys img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio")
        }
        if file.names.contains(prefix + "blocks.0.norm2.running_mean") { config.mlpNormalization = .batchNorm }
        guard let heads else {
            throw ModelConfigError("\(file.source) has no metadata giving its number of attention heads, and the shapes "
                + "cannot tell it (MoCo v3's ViT-S has 12 heads and timm's vit_small 6, with identical tensors): "
                + "pass --heads H, a divisor of the width \(C) (" + (1...C).filter { C % $0 == 0 && $0 <= 32 }.map(String.init)
                .joined(separator: ", ") + "; 64-wide heads are the common choice)")
        }
        config.heads = heads
        try config.validate()
        return config
    }

    static func noTrunkError(_ file: SafetensorsFile) -> ModelConfigError {
        let names = file.names
        if names.contains(where: { $0.hasSuffix("conv1.weight") || $0.hasSuffix("layer1.0.conv1.weight") }) {
            return ModelConfigError("\(file.source) holds a ResNet (conv1, layer1…), not a ViT; mocov3-cl evaluates ViTs only")
        }
        let sample = names.prefix(5).joined(separator: ", ")
        return ModelConfigError("\(file.source) holds no ViT trunk: no cls_token under any of the prefixes "
            + prefixes.map { "\"\($0)\"" }.joined(separator: ", ") + (names.isEmpty ? " (the file has no tensors)"
                : "; its first tensors are \(sample)"))
    }
}
