import Foundation

/// Human-readable sizes of a model and its training step, as `mocov3-cl step --dry-run` prints
/// them (counts in millions as the paper reports them, SPEC A.3; bytes in MiB/GiB).
extension MoCoParameters {
    /// Lines describing the configuration, parameter counts and memory plan for `batchSize`.
    public func summary(batchSize: Int) -> [String] {
        let vit = config.vit
        let counts = self.counts
        let plan = memoryPlan(batchSize: batchSize)
        var lines = [
            "configuration: ViT C=\(vit.embedDim) depth=\(vit.depth) heads=\(vit.heads) mlp_ratio=\(vit.mlpRatio) "
                + "image=\(vit.imageSize) patch=\(vit.patchSize) tokens=\(vit.tokens) "
                + "moco_dim=\(config.mocoDim) moco_mlp_dim=\(config.mocoMLPDim) T=\(config.temperature) "
                + "stop_grad_conv1=\(vit.stopGradConv1) pooling=\(vit.pooling.rawValue) norm2=\(vit.mlpNormalization.rawValue) "
                + "pos_embed=\(vit.positionEmbedding.rawValue) batch=\(batchSize)",
            "parameters:",
        ]
        for (label, count) in [("backbone", counts.backbone), ("projector", counts.projector),
                               ("predictor", counts.predictor), ("trainable", counts.trainable),
                               ("total", counts.total), ("buffers", counts.buffers)] {
            lines.append("  " + label.padding(toLength: 10, withPad: " ", startingAt: 0)
                + Self.millions(count) + "  (\(count))")
        }
        lines.append("memory plan (fp32):")
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
