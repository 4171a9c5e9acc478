import Foundation

/// Human-readable sizes of a model and its training step, as `mocov3-cl step --dry-run` prints
/// them (counts in millions as the paper reports them, SPEC A.3; bytes in MiB/GiB).
extension MoCoParameters {
    /// Multiply-add FLOPs (2 per multiply-add) of one image through the trunk and the projector,
    /// forward: the GEMMs and the attention's two batched products (element-wise work left out).
    public var encoderForwardFLOPs: Double {
        let vit = config.vit
        let (n, c, hidden) = (Double(vit.tokens), Double(vit.embedDim), Double(vit.mlpHiddenDim))
        let embed = 2 * Double(vit.patches) * Double(vit.channels * vit.patchSize * vit.patchSize) * c
        let block = 2 * n * c * 3 * c + 2 * 2 * n * n * c + 2 * n * c * c + 2 * 2 * n * c * hidden
        let (h, d) = (Double(config.mocoMLPDim), Double(config.mocoDim))
        return embed + Double(vit.depth) * block + 2 * (c * h + h * h + h * d)
    }

    /// The predictor's forward FLOPs for one image.
    public var predictorForwardFLOPs: Double {
        let (h, d) = (Double(config.mocoMLPDim), Double(config.mocoDim))
        return 2 * (d * h + h * d)
    }

    /// FLOPs of one MoCo v3 training iteration per image of the batch: both views through the base
    /// encoder and the predictor forward and backward (≈ 3× the forward) and through the
    /// momentum encoder forward. ViT-Tiny/4 @ 32 px with 4096/256 heads: 6.2 GFLOP.
    public var trainingFLOPsPerImage: Double {
        2 * (3 * (encoderForwardFLOPs + predictorForwardFLOPs) + encoderForwardFLOPs)
    }

    /// Lines describing the configuration, parameter counts and memory plan for `batchSize`;
    /// data parallel over `ranks`, the memory plan is one rank's, at its batchSize / ranks rows.
    public func summary(batchSize: Int, ranks: Int = 1) -> [String] {
        let vit = config.vit
        let counts = self.counts
        let plan = memoryPlan(batchSize: batchSize / max(ranks, 1))
        var lines = [
            "configuration: ViT C=\(vit.embedDim) depth=\(vit.depth) heads=\(vit.heads) mlp_ratio=\(vit.mlpRatio) "
                + "image=\(vit.imageSize) patch=\(vit.patchSize) tokens=\(vit.tokens) "
                + "moco_dim=\(config.mocoDim) moco_mlp_dim=\(config.mocoMLPDim) T=\(config.temperature) "
                + "stop_grad_conv1=\(vit.stopGradConv1) pooling=\(vit.pooling.rawValue) norm2=\(vit.mlpNormalization.rawValue) "
                + "pos_embed=\(vit.positionEmbedding.rawValue) batch=\(batchSize)"
                + (ranks > 1 ? " (\(batchSize / ranks) on each of \(ranks) ranks)" : ""),
            "parameters:",
        ]
        for (label, count) in [("backbone", counts.backbone), ("projector", counts.projector),
                               ("predictor", counts.predictor), ("trainable", counts.trainable),
                               ("total", counts.total), ("buffers", counts.buffers)] {
            lines.append("  " + label.padding(toLength: 10, withPad: " ", startingAt: 0)
                + Self.millions(count) + "  (\(count))")
        }
        lines.append(ranks > 1 ? "memory plan (fp32, each rank):" : "memory plan (fp32):")
        for (label, bytes) in [("parameters", plan.parameterBytes), ("gradients", plan.gradientBytes),
                               ("adamw", plan.optimizerStateBytes), ("buffers", plan.bufferBytes),
                               ("activations", plan.activationBytes), ("attention", plan.attentionScratchBytes),
                               ("total", plan.totalBytes)] {
            lines.append("  " + label.padding(toLength: 12, withPad: " ", startingAt: 0) + Self.byteSize(bytes))
        }
        return lines
    }

    /// `21665664` → `21.67 M`.
    public static func millions(_ count: Int) -> String { String(format: "%.2f M", Double(count) / 1e6) }

    /// Bytes in MiB below 1 GiB, else GiB.
    public static func byteSize(_ bytes: Int) -> String {
        let mebibytes = Double(bytes) / 1_048_576
        return mebibytes < 1024 ? String(format: "%.1f MiB", mebibytes) : String(format: "%.2f GiB", mebibytes / 1024)
    }
}
