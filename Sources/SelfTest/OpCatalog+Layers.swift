import Tensors

/// The catalog's layer ops: normalisations, the loss pieces, the kNN classifier, the patch
/// projection and attention. A backward's saved inputs (statistics, the forward's output) come
/// from the host backend's forward on the same values, as the model would hand them over.
extension OpCatalog {
    /// Runs `body` on the host and returns its outputs: the saved tensors a backward reads.
    func hostOutputs(_ inputs: [OpInput], _ outputs: [OpOutput],
                     _ body: @escaping (any Backend, [Tensor], [Tensor]) throws -> Void) throws -> [[Float]] {
        try OpCheck("", "", inputs: inputs, outputs: outputs, body).run(on: HostBackend()).values
    }

    /// `1e-6·count + 1e-5`: the absolute tolerance of a sum of `count` terms of order 1.
    func summed(_ count: Int) -> Double { 1e-6 * Double(count) + 1e-5 }

    // MARK: LayerNorm and BatchNorm

    mutating func normalizationChecks() throws -> [OpCheck] {
        let (r, c) = (sizes.rows, sizes.width)
        let x = input([r, c], -2...3), weight = input([c], 0.5...1.5), bias = input([c])
        let statistics = try hostOutputs([x, weight, bias], [OpOutput(shape: [r, c]), OpOutput(shape: [r]), OpOutput(shape: [r])]) { b, i, o in
            try b.layerNormForward(output: o[0], mean: o[1], reciprocalStd: o[2], input: i[0], weight: i[1], bias: i[2],
                                   epsilon: 1e-6)
        }
        var checks = [
            OpCheck("layerNormForward", "[\(r), \(c)]", inputs: [x, weight, bias],
                    outputs: [OpOutput(shape: [r, c]), OpOutput(shape: [r]), OpOutput(shape: [r])]) { b, i, o in
                try b.layerNormForward(output: o[0], mean: o[1], reciprocalStd: o[2], input: i[0], weight: i[1], bias: i[2],
                                       epsilon: 1e-6)
            },
            OpCheck("layerNormBackward", "[\(r), \(c)]",
                    inputs: [input([r, c]), x, .float(statistics[1], shape: [r]), .float(statistics[2], shape: [r]), weight],
                    outputs: [OpOutput(shape: [r, c]), OpOutput(shape: [c], initial: values(c)),
                              OpOutput(shape: [c], initial: values(c))], absolute: summed(r)) { b, i, o in
                try b.layerNormBackward(inputGradient: o[0], weightGradient: o[1], biasGradient: o[2], outputGradient: i[0],
                                        input: i[1], mean: i[2], reciprocalStd: i[3], weight: i[4])
            },
        ]

        // The heads' BatchNorm1d (B, hidden), with and without the affine part, and in eval mode.
        let (rows, width) = (sizes.headRows, 4 * sizes.headWidth)
        let bnInput = input([rows, width], -2...3), gamma = input([width], 0.5...1.5), beta = input([width])
        let running = [values(width), values(width, 0.5...2)]
        for affine in [true, false] {
            for training in affine ? [true, false] : [true] {
                let label = "[\(rows), \(width)]\(affine ? "" : " affine-free")\(training ? "" : " eval")"
                checks.append(OpCheck("batchNormForward", label, inputs: [bnInput, gamma, beta],
                                      outputs: [OpOutput(shape: [rows, width]), OpOutput(shape: [width]), OpOutput(shape: [width]),
                                                OpOutput(shape: [width], initial: running[0]),
                                                OpOutput(shape: [width], initial: running[1])]) { b, i, o in
                    try b.batchNormForward(output: o[0], savedMean: o[1], savedReciprocalStd: o[2], input: i[0],
                                           weight: affine ? i[1] : nil, bias: affine ? i[2] : nil, runningMean: o[3],
                                           runningVariance: o[4], momentum: 0.1, epsilon: 1e-5, training: training)
                })
            }
        }
        let saved = try hostOutputs([bnInput], (0..<5).map { OpOutput(shape: $0 == 0 ? [rows, width] : [width]) }) { b, i, o in
            try b.batchNormForward(output: o[0], savedMean: o[1], savedReciprocalStd: o[2], input: i[0], weight: nil,
                                   bias: nil, runningMean: o[3], runningVariance: o[4], momentum: 0.1, epsilon: 1e-5,
                                   training: true)
        }
        let bnGradient = input([rows, width])
        for affine in [true, false] {
            let gradients = affine ? [OpOutput(shape: [width], initial: values(width)), OpOutput(shape: [width], initial: values(width))] : []
            checks.append(OpCheck("batchNormBackward", "[\(rows), \(width)]\(affine ? "" : " affine-free")",
                                  inputs: [bnGradient, bnInput, .float(saved[1], shape: [width]),
                                           .float(saved[2], shape: [width]), gamma],
                                  outputs: [OpOutput(shape: [rows, width])] + gradients, absolute: summed(rows)) { b, i, o in
                try b.batchNormBackward(inputGradient: o[0], weightGradient: affine ? o[1] : nil,
                                        biasGradient: affine ? o[2] : nil, outputGradient: i[0], input: i[1],
                                        savedMean: i[2], savedReciprocalStd: i[3], weight: affine ? i[4] : nil)
            })
        }
        return checks
    }

    // MARK: Loss pieces

    mutating func lossChecks() throws -> [OpCheck] {
        let (r, m) = (sizes.headRows, sizes.headWidth)
        // MoCo's logits q̂·k̂ᵀ/T lie in [−1/T, 1/T] = [−5, 5]; labels arange (the real case) or scattered.
        let labels: [Int32] = sizes.name == "real" ? (0..<r).map { Int32($0) } : (0..<r).map { Int32(($0 * 5 + 3) % m) }
        let logits = input([r, m], -5...5)
        // Soft targets as mixup with label smoothing makes them: rows of non-negative weights summing to 1.
        let targets: [Float] = (0..<r).flatMap { _ -> [Float] in
            let row = values(m, 0...1)
            let total = row.reduce(0, +)
            return row.map { $0 / total }
        }
        let x = values(r * m)
        // One row of tiny values in the odd case reaches the ‖x‖ ≤ 1e-12 branch of F.normalize.
        let features = sizes.name == "odd" ? x.enumerated().map { $0.offset / m == 2 ? $0.element * 1e-14 : $0.element } : x
        let forwardOutputs = [OpOutput(shape: [r, m]), OpOutput(shape: [r])]
        let normalized = try hostOutputs([.float(features, shape: [r, m])], forwardOutputs) { b, i, o in
            try b.l2NormalizeForward(output: o[0], norms: o[1], input: i[0])
        }
        return [
            OpCheck("softmaxCrossEntropy", "[\(r), \(m)]", inputs: [logits, .int32(labels, shape: [r])],
                    outputs: [OpOutput(shape: [r]), OpOutput(shape: [r, m])]) { b, i, o in
                try b.softmaxCrossEntropy(losses: o[0], logitsGradient: o[1], logits: i[0], labels: i[1],
                                          scale: 2 * 0.2 / Float(r))
            },
            OpCheck("softTargetCrossEntropy", "[\(r), \(m)]", inputs: [logits, .float(targets, shape: [r, m])],
                    outputs: [OpOutput(shape: [r]), OpOutput(shape: [r, m])]) { b, i, o in
                try b.softTargetCrossEntropy(losses: o[0], logitsGradient: o[1], logits: i[0], targets: i[1],
                                             scale: 1 / Float(r))
            },
            OpCheck("l2NormalizeForward", "[\(r), \(m)]", inputs: [.float(features, shape: [r, m])],
                    outputs: forwardOutputs) { b, i, o in
                try b.l2NormalizeForward(output: o[0], norms: o[1], input: i[0])
            },
            // Gradients of the 1e-12-clamped row are 1e12 times the others: rtol carries them.
            OpCheck("l2NormalizeBackward", "[\(r), \(m)]",
                    inputs: [input([r, m]), .float(normalized[0], shape: [r, m]), .float(normalized[1], shape: [r])],
                    outputs: [OpOutput(shape: [r, m])]) { b, i, o in
                try b.l2NormalizeBackward(inputGradient: o[0], outputGradient: i[0], output: i[1], norms: i[2])
            },
        ]
    }

    // MARK: kNN classifier

    mutating func knnChecks() throws -> [OpCheck] {
        let (rows, bank, tile, k) = (sizes.knnRows, sizes.knnBank, sizes.knnTile, sizes.knnK)
        let classes = 10
        // Every 13th bank slot unfilled (label −1), as a bank that is still filling.
        let bankLabels: [Int32] = (0..<bank).map { $0 % 13 == 5 ? -1 : Int32(($0 * 7 + $0 / 3) % classes) }
        let starts = Array(stride(from: 0, to: bank, by: tile))
        let tiles: [OpInput] = starts.map { .float(values(rows * min(tile, bank - $0)), shape: [rows, min(tile, bank - $0)]) }
        let heap = [OpOutput(shape: [rows, k]), OpOutput(shape: [rows, k], dtype: .int32)]
        let merge: (any Backend, [Tensor], [Tensor]) throws -> Void = { b, i, o in
            try b.knnTopKReset(values: o[0], indices: o[1])
            for (index, start) in starts.enumerated() {
                try b.knnTopK(values: o[0], indices: o[1], similarities: i[1 + index], bankLabels: i[0], columnOffset: start)
            }
        }
        let labelInput = OpInput.int32(bankLabels, shape: [bank])
        let kept = try hostOutputs([labelInput] + tiles, heap, merge)
        let label = "\(rows) queries, bank \(bank) in tiles of \(tile), k \(k)"
        // The heap is the same algorithm on every backend: kept pairs and slots match exactly.
        return [
            OpCheck("knnTopKReset", "[\(rows), \(k)]", inputs: [], outputs: heap, relative: 0, absolute: 0) { b, _, o in
                try b.knnTopKReset(values: o[0], indices: o[1])
            },
            OpCheck("knnTopK", label, inputs: [labelInput] + tiles, outputs: heap, relative: 0, absolute: 0, merge),
            OpCheck("knnVote", label, inputs: [.float(kept[0], shape: [rows, k]), .int32(kept[1].map { Int32($0) }, shape: [rows, k]),
                                               labelInput],
                    outputs: [OpOutput(shape: [rows], dtype: .int32)], relative: 0, absolute: 0) { b, i, o in
                try b.knnVote(predictions: o[0], values: i[0], indices: i[1], bankLabels: i[2], classes: classes,
                              temperature: 0.07)
            },
        ]
    }

    // MARK: Patch projection and attention

    mutating func transformerChecks() throws -> [OpCheck] {
        let (batch, c, side, p) = (sizes.images, sizes.width, sizes.imageSide, sizes.patchSide)
        let patches = (side / p) * (side / p), n = patches + 1, inputs = 3 * p * p
        let images = input([batch, 3, side, side], -2...2), weight = input([c, inputs]), bias = input([c])
        let embedded = [batch, n, c]
        var checks = [
            // Token 0 (the class token's row) is not the op's to write: it keeps its initial values.
            OpCheck("patchEmbedForward", "\(batch)×3×\(side)×\(side), patch \(p), width \(c)", inputs: [images, weight, bias],
                    outputs: [OpOutput(shape: embedded, initial: values(batch * n * c))],
                    absolute: 2e-7 * Double(inputs) + 1e-5) { b, i, o in
                try b.patchEmbedForward(output: o[0], images: i[0], weight: i[1], bias: i[2], patchSize: p, firstToken: 1)
            },
            OpCheck("patchEmbedBackward", "\(batch)×3×\(side)×\(side), patch \(p), width \(c)", inputs: [input(embedded), images],
                    outputs: [OpOutput(shape: [c, inputs], initial: values(c * inputs)), OpOutput(shape: [c], initial: values(c))],
                    absolute: 4e-7 * Double(batch * patches) + 1e-5) { b, i, o in
                try b.patchEmbedBackward(weightGradient: o[0], biasGradient: o[1], outputGradient: i[0], images: i[1],
                                         patchSize: p, firstToken: 1)
            },
        ]

        let (tokens, heads) = (sizes.tokens, sizes.heads)
        let qkv = input([batch, tokens, 3 * c])
        let forwardOutputs = [OpOutput(shape: [batch, tokens, c]), OpOutput(shape: [batch, heads, tokens])]
        let attention: (any Backend, [Tensor], [Tensor]) throws -> Void = { b, i, o in
            try b.attentionForward(output: o[0], logSumExp: o[1], qkv: i[0], heads: heads)
        }
        let saved = try hostOutputs([qkv], forwardOutputs, attention)
        let label = "B \(batch), N \(tokens), C \(c), \(heads) heads"
        checks.append(OpCheck("attentionForward", label, inputs: [qkv], outputs: forwardOutputs, attention))
        checks.append(OpCheck("attentionBackward", label,
                              inputs: [input([batch, tokens, c]), qkv, .float(saved[0], shape: [batch, tokens, c]),
                                       .float(saved[1], shape: [batch, heads, tokens])],
                              outputs: [OpOutput(shape: [batch, tokens, 3 * c])], absolute: summed(tokens)) { b, i, o in
            try b.attentionBackward(qkvGradient: o[0], outputGradient: i[0], qkv: i[1], output: i[2], logSumExp: i[3],
                                    heads: heads)
        })
        return checks
    }
}
