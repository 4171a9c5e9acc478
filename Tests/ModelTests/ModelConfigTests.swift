import Model
import Testing

/// `error`'s message, or nil when `body` does not throw a ``ModelConfigError``.
func configErrorMessage(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as ModelConfigError {
        return error.message
    } catch {
        return "unexpected error type: \(error)"
    }
}

@Suite struct ModelConfigTests {
    @Test func presetsHaveTheMoCoV3Shapes() throws {
        let expected: [(String, Int, Int, Int)] = [
            ("vit_tiny", 192, 12, 3), ("vit_small", 384, 12, 12), ("vit_base", 768, 12, 12),
            ("vit_large", 1024, 24, 16), ("vit_huge", 1280, 32, 16),
        ]
        for (name, width, depth, heads) in expected {
            let vit = try ViTConfig.named(name)
            #expect(vit.embedDim == width && vit.depth == depth && vit.heads == heads, "\(name)")
            #expect(vit.imageSize == 224 && vit.patchSize == 16 && vit.mlpRatio == 4 && vit.channels == 3, "\(name)")
            try vit.validate()
        }
        // SPEC A.2: MoCo v3's ViT-S has 12 heads (timm's has 6), head dim 32.
        #expect(ViTConfig.vitSmall.headDim == 32)
        #expect(ViTConfig.vitSmall.tokens == 197 && ViTConfig.vitSmall.patches == 196 && ViTConfig.vitSmall.grid == 14)
        #expect(ViTConfig.vitBase.headDim == 64 && ViTConfig.vitBase.mlpHiddenDim == 3072)
    }

    @Test func unknownArchitectureListsTheValidNames() {
        let message = configErrorMessage { _ = try ViTConfig.named("vit_smol") }
        #expect(message?.contains("vit_smol") == true)
        for name in ["vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge"] {
            #expect(message?.contains(name) == true, "\(name) missing from: \(message ?? "no error")")
        }
    }

    @Test func invalidConfigurationsThrowClearMessages() {
        func message(_ change: (inout ViTConfig) -> Void) -> String? {
            var vit = ViTConfig.vitSmall
            change(&vit)
            return configErrorMessage { try vit.validate() }
        }
        #expect(message { $0.patchSize = 15 }?.contains("patch size 15 must divide the image size 224") == true)
        #expect(message { $0.heads = 7 }?.contains("heads (7) must divide the width embedDim (384)") == true)
        #expect(message { $0.embedDim = 390; $0.heads = 6 }?.contains("divisible by 4") == true)
        // Without the sin-cos table the width need not be a multiple of 4.
        #expect(message { $0.embedDim = 390; $0.heads = 6; $0.positionEmbedding = .none } == nil)
        #expect(message { $0.depth = 0 }?.contains("depth must be positive, got 0") == true)
        #expect(message { $0.imageSize = -16 }?.contains("imageSize must be positive") == true)
        #expect(message { $0.channels = 0 }?.contains("channels must be positive") == true)
        #expect(message { _ in } == nil)

        var moco = MoCoConfig(vit: .vitSmall)
        #expect(moco.mocoDim == 256 && moco.mocoMLPDim == 4096 && moco.temperature == 0.2)
        moco.temperature = 0
        #expect(configErrorMessage { try moco.validate() }?.contains("temperature") == true)
        moco = MoCoConfig(vit: .vitSmall, mocoDim: 0)
        #expect(configErrorMessage { try moco.validate() }?.contains("mocoDim") == true)
        moco = MoCoConfig(vit: ViTConfig(imageSize: 30, embedDim: 384, depth: 12, heads: 12))
        #expect(configErrorMessage { _ = try MoCoParameters(moco) }?.contains("must divide the image size") == true)
    }

    /// SPEC A.2 / A.3: ViT-S/16 backbone 21.67 M (timm convention: the frozen pos_embed counts),
    /// projector 19.42 M, predictor 2.11 M, trainable with --stop-grad-conv1 42.82 M, total
    /// 84.27 M; ViT-B 85.80 M, 20.99 M, 108.15 M, 215.68 M.
    @Test func parameterCountsMatchTheReference() throws {
        var small = ViTConfig.vitSmall
        small.stopGradConv1 = true
        let s = try MoCoParameters(MoCoConfig(vit: small)).counts
        #expect(s.backbone == 21_665_664)
        #expect(s.projector == 19_415_040)
        #expect(s.predictor == 2_105_344)
        #expect(s.trainable == 42_815_104)
        #expect(s.total == 84_266_752)
        // To the 4 significant figures SPEC quotes.
        func millions(_ count: Int) -> Double { (Double(count) / 1e4).rounded() / 100 }
        #expect(millions(s.backbone) == 21.67 && millions(s.trainable) == 42.82 && millions(s.total) == 84.27)

        var base = ViTConfig.vitBase
        base.stopGradConv1 = true
        let b = try MoCoParameters(MoCoConfig(vit: base)).counts
        #expect(millions(b.backbone) == 85.80 && millions(b.projector) == 20.99)
        #expect(millions(b.trainable) == 108.15 && millions(b.total) == 215.68)

        // Without stop-grad the patch projection (C·3·16² + C) trains too; pos_embed never does.
        let trainableConv = try MoCoParameters(MoCoConfig(vit: .vitSmall)).counts
        #expect(trainableConv.trainable == s.trainable + 384 * 3 * 256 + 384)
        #expect(trainableConv.trainable == s.backbone + s.projector + s.predictor - 197 * 384)
        // BN buffers: head.1, head.4 (h mean + h var + 1), head.7 (d + d + 1), in two encoders;
        // predictor.1 and .4 once.
        #expect(s.buffers == 2 * (2 * (2 * 4096 + 1) + 2 * 256 + 1) + (2 * 4096 + 1) + (2 * 256 + 1))
    }

    @Test func memoryPlanFollowsItsDocumentedFormula() throws {
        var small = ViTConfig.vitSmall
        small.stopGradConv1 = true
        let parameters = try MoCoParameters(MoCoConfig(vit: small))
        let plan = parameters.memoryPlan(batchSize: 32)
        #expect(plan.parameterBytes == 4 * parameters.table.count)
        #expect(plan.parameterBytes >= 4 * 84_266_752)
        #expect(plan.gradientBytes == 4 * parameters.trainableRegion.count)
        #expect(plan.optimizerStateBytes == 2 * plan.gradientBytes)
        // ViT-S/16, 32 images per view: per token 16·384 + 12 + 4 floats per block.
        let perImage = 12 * 197 * (16 * 384 + 16) + 3 * 224 * 224 + 197 * 384 + 2 * 197 + 9 * 4096 + 4 * 256
        #expect(plan.activationBytes == 64 * perImage * 4)
        #expect(plan.attentionScratchBytes == 64 * 12 * 197 * 197 * 4)
        #expect(plan.totalBytes == plan.parameterBytes + plan.gradientBytes + plan.optimizerStateBytes
            + plan.bufferBytes + plan.activationBytes + plan.attentionScratchBytes)
        #expect(parameters.memoryPlan(batchSize: 64).activationBytes == 2 * plan.activationBytes)
    }
}
