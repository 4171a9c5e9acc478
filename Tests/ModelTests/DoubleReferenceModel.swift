import Tensors
import Model
import RealModule

/// The whole MoCo v3 loss of a tiny model in plain loops, generic over the precision (the
/// finite-difference tests run it in Double), written independently of `MoCoModel` from the
/// host reference functions (LayerNorm, BatchNorm, attention, GELU, L2-normalize, cross-entropy).
/// It reads parameters and BN buffers from the same flat layout (``MoCoParameters``), so a Float
/// model and this reference evaluate the same function at the same point.
///
/// It follows `moco/builder.py` and timm's `VisionTransformer` (SPEC A.1–A.4) directly:
///
///     tokens = [cls; patch_embed(x)] + pos_embed                       (B, N, C)
///     per block: x += proj(attn(LN1(x)));  x += fc2(GELU(fc1(norm2(x))))
///     feature = LN(x)[:, 0]  or  mean_{n ≥ 1} LN(x)[:, n]               (B, C)
///     q = predictor(projector(feature));  k likewise without predictor (momentum block)
///     loss = ctr(q1, k2) + ctr(q2, k1),  ctr(q, k) = 2τ·CE(q̂·k̂ᵀ/τ, arange(B))
///
/// `norm2` is LayerNorm (ε 1e-6) or, for ViT-BN, a training-mode BatchNorm over all B·N tokens
/// per channel (ε 1e-5, momentum 0.1). Every BN uses the batch statistics of its own view.
struct ReferenceMoCo<T: Real & BinaryFloatingPoint> {
    let layout: MoCoParameters
    let batchSize: Int
    var config: MoCoConfig { layout.config }
    var vit: ViTConfig { layout.config.vit }

    /// What one forward returns: the loss, and the BN buffers after every training-mode BN
    /// (running statistics updated, num_batches_tracked counted) in the buffers' flat layout.
    struct Forward {
        var loss: T
        var buffers: [T]
    }

    // MARK: Whole loss

    /// `loss = ctr(q1, k2) + ctr(q2, k1)`, with the keys computed from the momentum block.
    func forward(parameters: [T], buffers: [T], x1: [T], x2: [T]) -> Forward {
        var buffers = buffers
        let q1 = query(parameters: parameters, buffers: &buffers, images: x1)
        let q2 = query(parameters: parameters, buffers: &buffers, images: x2)
        let k1 = key(parameters: parameters, buffers: &buffers, images: x1)
        let k2 = key(parameters: parameters, buffers: &buffers, images: x2)
        return Forward(loss: contrastiveLoss(q1, k2) + contrastiveLoss(q2, k1), buffers: buffers)
    }

    /// The loss with the keys given (they do not depend on the base encoder or the predictor, so
    /// a finite-difference sweep over those computes them once).
    func loss(parameters: [T], buffers: [T], x1: [T], x2: [T], k1: [T], k2: [T]) -> T {
        var buffers = buffers
        let q1 = query(parameters: parameters, buffers: &buffers, images: x1)
        let q2 = query(parameters: parameters, buffers: &buffers, images: x2)
        return contrastiveLoss(q1, k2) + contrastiveLoss(q2, k1)
    }

    /// q = predictor(base_encoder(x)) (B, moco_dim).
    func query(parameters: [T], buffers: inout [T], images: [T]) -> [T] {
        let base = MoCoParameters.baseEncoderPrefix
        let feature = trunk(parameters: parameters, buffers: &buffers, prefix: base, images: images)
        let projection = mlp(parameters: parameters, buffers: &buffers, prefix: base + "head.", input: feature,
                             linearIndices: [0, 3, 6], normIndices: [1, 4, 7])
        return mlp(parameters: parameters, buffers: &buffers, prefix: MoCoParameters.predictorPrefix,
                   input: projection, linearIndices: [0, 3], normIndices: [1, 4])
    }

    /// k = momentum_encoder(x) (B, moco_dim), training mode as the reference runs it.
    func key(parameters: [T], buffers: inout [T], images: [T]) -> [T] {
        let momentum = MoCoParameters.momentumEncoderPrefix
        let feature = trunk(parameters: parameters, buffers: &buffers, prefix: momentum, images: images)
        return mlp(parameters: parameters, buffers: &buffers, prefix: momentum + "head.", input: feature,
                   linearIndices: [0, 3, 6], normIndices: [1, 4, 7])
    }

    // MARK: ViT trunk

    /// images (B, channels, S, S) → the pooled feature (B, C). `training` false: ViT-BN's norm2
    /// uses (and keeps) the running statistics, as feature extraction does.
    func trunk(parameters: [T], buffers: inout [T], prefix: String, images: [T], training: Bool = true) -> [T] {
        let (B, N, C, P) = (batchSize, vit.tokens, vit.embedDim, vit.patchSize)
        let (S, channels, grid) = (vit.imageSize, vit.channels, vit.grid)
        func p(_ name: String) -> [T] { tensor(parameters, layout.table, prefix + name) }

        // Conv2d(channels, C, P, stride P) + flatten + transpose, written out; row 0 is cls.
        let (weight, bias, classToken) = (p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), p("cls_token"))
        let patchLength = channels * P * P
        var x = [T](repeating: 0, count: B * N * C)                  // (B, N, C)
        for b in 0..<B {
            for c in 0..<C { x[b * N * C + c] = classToken[c] }
            for t in 0..<(grid * grid) {
                let (row, column) = (t / grid, t % grid)
                for c in 0..<C {
                    var sum = bias[c]
                    for channel in 0..<channels {
                        for i in 0..<P {
                            for j in 0..<P {
                                let pixel = ((b * channels + channel) * S + row * P + i) * S + column * P + j
                                sum += weight[c * patchLength + (channel * P + i) * P + j] * images[pixel]
                            }
                        }
                    }
                    x[(b * N + 1 + t) * C + c] = sum
                }
            }
        }
        if vit.positionEmbedding == .sinCos {
            let positions = p("pos_embed")                           // (1, N, C)
            for b in 0..<B { for i in 0..<(N * C) { x[b * N * C + i] += positions[i] } }
        }

        let geometry = AttentionGeometry(batch: B, tokens: N, width: C, heads: vit.heads)
        let hidden = vit.mlpHiddenDim
        let layerNormEpsilon = T(1e-6)
        for index in 0..<vit.depth {
            func q(_ name: String) -> [T] { p("blocks.\(index).\(name)") }
            let h1 = LayerNormReference.forward(input: x, weight: q("norm1.weight"), bias: q("norm1.bias"),
                                                epsilon: layerNormEpsilon).output
            let qkv = linear(h1, q("attn.qkv.weight"), q("attn.qkv.bias"), inputs: C, outputs: 3 * C)
            let attention = AttentionReference.forward(qkv: qkv, geometry: geometry).output
            x = add(x, linear(attention, q("attn.proj.weight"), q("attn.proj.bias"), inputs: C, outputs: C))
            let h2: [T]
            switch vit.mlpNormalization {
            case .layerNorm:
                h2 = LayerNormReference.forward(input: x, weight: q("norm2.weight"), bias: q("norm2.bias"),
                                                epsilon: layerNormEpsilon).output
            case .batchNorm:
                // ViT-BN: x seen as (B·N, C), statistics per channel over every token of the view.
                h2 = batchNorm(x, weight: q("norm2.weight"), bias: q("norm2.bias"), buffers: &buffers,
                               name: prefix + "blocks.\(index).norm2", training: training)
            }
            let fc1 = linear(h2, q("mlp.fc1.weight"), q("mlp.fc1.bias"), inputs: C, outputs: hidden)
            let gelu = fc1.map { ElementwiseReference.gelu($0) }
            x = add(x, linear(gelu, q("mlp.fc2.weight"), q("mlp.fc2.bias"), inputs: hidden, outputs: C))
        }
        let normalized = LayerNormReference.forward(input: x, weight: p("norm.weight"), bias: p("norm.bias"),
                                                    epsilon: layerNormEpsilon).output
        var feature = [T](repeating: 0, count: B * C)                // (B, C)
        for b in 0..<B {
            switch vit.pooling {
            case .classToken:
                for c in 0..<C { feature[b * C + c] = normalized[b * N * C + c] }
            case .globalAverage:
                for n in 1..<N { for c in 0..<C { feature[b * C + c] += normalized[(b * N + n) * C + c] } }
                for c in 0..<C { feature[b * C + c] /= T(N - 1) }
            }
        }
        return feature
    }

    // MARK: Heads and loss

    /// `_build_mlp`: bias-free Linear, training-mode BN (affine except the last), ReLU between.
    func mlp(parameters: [T], buffers: inout [T], prefix: String, input: [T], linearIndices: [Int],
             normIndices: [Int]) -> [T] {
        var x = input
        for (layer, (linearIndex, normIndex)) in zip(linearIndices, normIndices).enumerated() {
            let last = layer == linearIndices.count - 1
            let weightName = prefix + "\(linearIndex).weight"
            let shape = layout.table[weightName]!.shape                // (out, in)
            let y = linear(x, tensor(parameters, layout.table, weightName), nil, inputs: shape[1], outputs: shape[0])
            let normName = prefix + "\(normIndex)"
            x = batchNorm(y, weight: last ? nil : tensor(parameters, layout.table, normName + ".weight"),
                          bias: last ? nil : tensor(parameters, layout.table, normName + ".bias"),
                          buffers: &buffers, name: normName)
            if !last { x = x.map { max($0, 0) } }
        }
        return x
    }

    /// `contrastive_loss(q, k) = 2τ · mean_r CE(q̂·k̂ᵀ/τ, r)` (SPEC A.4).
    func contrastiveLoss(_ q: [T], _ k: [T]) -> T {
        let (B, d) = (batchSize, config.mocoDim)
        let temperature = T(config.temperature)
        let (queries, keys) = (normalizeRows(q, width: d), normalizeRows(k, width: d))
        var total: T = 0
        var logits = [T](repeating: 0, count: B), gradient = logits
        for r in 0..<B {
            for j in 0..<B {
                var dot: T = 0
                for e in 0..<d { dot += queries[r * d + e] * keys[j * d + e] }
                logits[j] = dot / temperature
            }
            total += logits.withUnsafeBufferPointer { z in
                gradient.withUnsafeMutableBufferPointer { g in
                    LossReference.softmaxCrossEntropy(logits: z, label: r, scale: 2 * temperature / T(B), gradient: g)
                }
            }
        }
        return total
    }

    func normalizeRows(_ x: [T], width: Int) -> [T] {
        var y = x
        for r in 0..<(x.count / width) {
            x.withUnsafeBufferPointer { source in
                y.withUnsafeMutableBufferPointer { target in
                    _ = L2NormReference.normalize(UnsafeBufferPointer(rebasing: source[(r * width)..<((r + 1) * width)]),
                                                into: UnsafeMutableBufferPointer(rebasing: target[(r * width)..<((r + 1) * width)]))
                }
            }
        }
        return y
    }

    // MARK: Pieces

    /// BatchNorm1d over x (R, C) with C = the layer's features; in training mode updates the
    /// running statistics and num_batches_tracked in `buffers`.
    func batchNorm(_ x: [T], weight: [T]?, bias: [T]?, buffers: inout [T], name: String, training: Bool = true) -> [T] {
        let meanEntry = layout.buffers[name + ".running_mean"]!, varianceEntry = layout.buffers[name + ".running_var"]!
        let countEntry = layout.buffers[name + ".num_batches_tracked"]!
        let result = BatchNormReference.forward(
            input: x, weight: weight, bias: bias, runningMean: tensor(buffers, layout.buffers, meanEntry.name),
            runningVariance: tensor(buffers, layout.buffers, varianceEntry.name), momentum: T(0.1), epsilon: T(1e-5),
            training: training)
        guard training else { return result.output }
        buffers.replaceSubrange(meanEntry.offset..<(meanEntry.offset + meanEntry.count), with: result.runningMean)
        buffers.replaceSubrange(varianceEntry.offset..<(varianceEntry.offset + varianceEntry.count),
                                with: result.runningVariance)
        buffers[countEntry.offset] += 1
        return result.output
    }

    /// y (R, out) = x (R, in)·Wᵀ + b.
    func linear(_ x: [T], _ weight: [T], _ bias: [T]?, inputs: Int, outputs: Int) -> [T] {
        let rows = x.count / inputs
        var y = [T](repeating: 0, count: rows * outputs)
        for r in 0..<rows {
            for o in 0..<outputs {
                var sum = bias?[o] ?? 0
                for i in 0..<inputs { sum += x[r * inputs + i] * weight[o * inputs + i] }
                y[r * outputs + o] = sum
            }
        }
        return y
    }

    func add(_ a: [T], _ b: [T]) -> [T] { zip(a, b).map { $0 + $1 } }

    func tensor(_ values: [T], _ table: ParameterTable, _ name: String) -> [T] {
        let entry = table[name]!
        return Array(values[entry.offset..<(entry.offset + entry.count)])
    }
}
