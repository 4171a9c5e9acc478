import Tensors

/// The sizes one pass of the catalog runs at. `real` is a slice of a ViT-S/16 @ 224 MoCo step
/// (2 images of 197 tokens, width 384, 6 heads; the heads' BN and loss at batch 256); `odd` has
/// no size that is a multiple of a work-group size or vector width, so every kernel's ragged
/// tails run.
public struct CatalogSizes: Sendable {
    public let name: String
    /// B and N of the token ops; rows R = B·N.
    public let images: Int, tokens: Int
    /// C, H (C = H·D) and the MLP's hidden width.
    public let width: Int, heads: Int, hidden: Int
    /// Image side and patch side of the patch projection (tokens there: (S/P)² + 1).
    public let imageSide: Int, patchSide: Int
    /// Rows and width of the heads' BatchNorm, L2 normalisation and loss (batch, moco width).
    public let headRows: Int, headWidth: Int
    /// The kNN monitor: queries, bank, tile, k.
    public let knnRows: Int, knnBank: Int, knnTile: Int, knnK: Int
    /// Flat-buffer segments of the optimizers (one per parameter tensor, with frozen gaps).
    public let segments: SegmentTable

    public var rows: Int { images * tokens }

    public static let real = CatalogSizes(
        name: "real", images: 2, tokens: 197, width: 384, heads: 6, hidden: 1536, imageSide: 224, patchSide: 16,
        headRows: 256, headWidth: 256, knnRows: 256, knnBank: 6000, knnTile: 2048, knnK: 200,
        segments: SegmentTable([
            .init(offset: 0, count: 1536 * 384),                     // fc1.weight
            .init(offset: 589_824, count: 1536, adapted: false),      // fc1.bias
            .init(offset: 591_360 + 768, count: 384 * 1536),          // fc2.weight, after a frozen gap
            .init(offset: 1_181_952, count: 384, adapted: false),     // fc2.bias
        ]))

    public static let odd = CatalogSizes(
        name: "odd", images: 3, tokens: 13, width: 39, heads: 3, hidden: 47, imageSide: 15, patchSide: 5,
        headRows: 7, headWidth: 37, knnRows: 7, knnBank: 33, knnTile: 10, knnK: 5,
        segments: SegmentTable([
            .init(offset: 0, count: 3000),
            .init(offset: 3000, count: 40, adapted: false),
            .init(offset: 3053, count: 1, adapted: false),            // a scalar after a frozen gap
            .init(offset: 3100, count: 4097),                         // crosses a 4096-element chunk
            .init(offset: 7197, count: 7, adapted: false),
            .init(offset: 9000, count: 3),                            // after a large frozen gap
        ]))
}

/// Every op of ``Backend``, forward and backward, as ``OpCheck``s on seeded random inputs (never
/// zeros). Tolerances are those of the kernels' own tests: rtol 1e-4, atol 1e-5, with the
/// absolute part scaled by the length of a reduction where one sums many terms.
public struct OpCatalog {
    public let sizes: CatalogSizes
    var generator: SplitMix64

    public init(sizes: CatalogSizes, seed: UInt64 = 0x5E1F_7E57) {
        self.sizes = sizes
        generator = SplitMix64(seed: seed)
    }

    mutating func values(_ count: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
        randomValues(count, in: range, using: &generator)
    }

    mutating func input(_ shape: [Int], _ range: ClosedRange<Float> = -1...1) -> OpInput {
        .float(values(shape.reduce(1, *), range), shape: shape)
    }

    /// Every check at these sizes.
    public mutating func checks() throws -> [OpCheck] {
        try vectorChecks() + gemmChecks() + elementwiseChecks() + optimizerChecks() + normalizationChecks()
            + lossChecks() + knnChecks() + transformerChecks()
    }

    // MARK: fill, axpy, GEMM

    mutating func vectorChecks() -> [OpCheck] {
        let count = sizes.rows * sizes.width + 3
        return [
            OpCheck("fill", "(\(count))", inputs: [], outputs: [OpOutput(shape: [count])], relative: 0, absolute: 0) { b, _, o in
                try b.fill(o[0], value: 0.375)
            },
            OpCheck("axpy", "(\(count))", inputs: [input([count])],
                    outputs: [OpOutput(shape: [count], initial: values(count))], relative: 1e-6, absolute: 1e-6) { b, i, o in
                try b.axpy(alpha: -0.625, x: i[0], y: o[0])
            },
        ]
    }

    mutating func gemmChecks() -> [OpCheck] {
        let (r, c, h) = (sizes.rows, sizes.width, sizes.hidden)
        let d = c / sizes.heads, n = sizes.tokens, heads = sizes.images * sizes.heads
        let shapes: [(String, GEMMShape)] = [
            ("fc1 forward", GEMMShape(m: r, n: h, k: c, transposeB: true)),
            ("fc1 input gradient", GEMMShape(m: r, n: c, k: h)),
            ("fc1 weight gradient", GEMMShape(m: h, n: c, k: r, transposeA: true)),
            ("both transposed", GEMMShape(m: c, n: n, k: d, transposeA: true, transposeB: true)),
            ("attention Q·Kᵀ", GEMMShape(m: n, n: n, k: d, transposeB: true, batch: heads)),
            ("attention P·V", GEMMShape(m: n, n: d, k: n, batch: heads)),
        ]
        return shapes.map { label, shape in
            let a = input([shape.m * shape.k * shape.batch]), bValues = input([shape.k * shape.n * shape.batch])
            let cCount = shape.m * shape.n * shape.batch
            return OpCheck("gemm", "\(label) \(shape)", inputs: [a, bValues],
                           outputs: [OpOutput(shape: [cCount], initial: values(cCount))],
                           absolute: 2e-7 * Double(shape.k) + 1e-5) { b, i, o in
                try b.gemm(shape, alpha: 0.75, a: i[0], b: i[1], beta: 0.5, c: o[0])
            }
        }
    }

    // MARK: Element-wise and reductions

    mutating func elementwiseChecks() -> [OpCheck] {
        let (r, c, h) = (sizes.rows, sizes.width, sizes.hidden)
        let big = [r, h], rc = [r, c]
        let sum = 1e-6 * Double(r) + 1e-5
        var checks = [
            OpCheck("gelu", "\(big)", inputs: [input(big, -4...4)], outputs: [OpOutput(shape: big)]) { b, i, o in
                try b.gelu(output: o[0], input: i[0])
            },
            OpCheck("geluBackward", "\(big)", inputs: [input(big), input(big, -4...4)], outputs: [OpOutput(shape: big)]) { b, i, o in
                try b.geluBackward(inputGradient: o[0], outputGradient: i[0], input: i[1])
            },
            OpCheck("relu", "\(big)", inputs: [input(big)], outputs: [OpOutput(shape: big)], relative: 0, absolute: 0) { b, i, o in
                try b.relu(output: o[0], input: i[0])
            },
            OpCheck("reluBackward", "\(big)", inputs: [input(big), input(big)], outputs: [OpOutput(shape: big)],
                    relative: 0, absolute: 0) { b, i, o in
                try b.reluBackward(inputGradient: o[0], outputGradient: i[0], output: i[1])
            },
            OpCheck("add", "\(rc)", inputs: [input(rc), input(rc)], outputs: [OpOutput(shape: rc)], relative: 1e-6, absolute: 0) { b, i, o in
                try b.add(output: o[0], i[0], i[1])
            },
            OpCheck("scale", "\(rc)", inputs: [], outputs: [OpOutput(shape: rc, initial: values(r * c))],
                    relative: 1e-6, absolute: 0) { b, _, o in
                try b.scale(o[0], by: 1.0 / 0.9)
            },
            OpCheck("addBias", "\(rc)", inputs: [input([c])], outputs: [OpOutput(shape: rc, initial: values(r * c))],
                    relative: 1e-6, absolute: 0) { b, i, o in
                try b.addBias(o[0], bias: i[0])
            },
            OpCheck("sumRows", "\(rc)", inputs: [input(rc)], outputs: [OpOutput(shape: [c], initial: values(c))],
                    absolute: sum) { b, i, o in
                try b.sumRows(output: o[0], input: i[0])
            },
        ]
        // Drop path's factors: 0 for a dropped sample, 1/keep for a kept one.
        let factors = (0..<r).map { $0 % 3 == 1 ? Float(0) : Float(1 / 0.9) }
        checks.append(OpCheck("scaleRows", "\(rc)", inputs: [input(rc), .float(factors, shape: [r])],
                              outputs: [OpOutput(shape: rc)], relative: 0, absolute: 0) { b, i, o in
            try b.scaleRows(output: o[0], input: i[0], factors: i[1])
        })
        let segments = sizes.segments
        checks.append(OpCheck("squaredNorms", "\(segments.count) segments of \(segments.extent)",
                              inputs: [input([segments.extent])], outputs: [OpOutput(shape: [segments.count])]) { b, i, o in
            try b.squaredNorms(output: o[0], input: i[0], segments: segments)
        })
        return checks
    }

    // MARK: Optimizers and the momentum encoder

    mutating func optimizerChecks() -> [OpCheck] {
        let segments = sizes.segments, length = segments.extent
        let label = "\(segments.count) segments of \(length), 2 steps"
        func state(_ ranges: [ClosedRange<Float>]) -> [OpOutput] {
            ranges.map { OpOutput(shape: [length], initial: values(length, $0)) }
        }
        let gradients = [input([length]), input([length])]
        return [
            OpCheck("adamw", label, inputs: gradients, outputs: state([-1...1, -0.01...0.01, 0...0.01]),
                    relative: 1e-5, absolute: 1e-6) { b, i, o in
                for step in 1...2 {
                    try b.adamw(parameters: o[0], gradients: i[step - 1], firstMoment: o[1], secondMoment: o[2],
                                segments: segments,
                                step: AdamWStep(learningRate: 1e-3 * Double(step), weightDecay: 0.1, step: step))
                }
            },
            // Outputs: parameters, momentum buffer, the gradients LARS rescales in place.
            OpCheck("lars", label, inputs: [], outputs: state([-1...1, -0.1...0.1, -1...1]),
                    relative: 1e-4, absolute: 1e-6) { b, _, o in
                for _ in 0..<2 {
                    try b.lars(parameters: o[0], gradients: o[2], momentumBuffer: o[1], segments: segments,
                               step: LARSStep(learningRate: 0.6, weightDecay: 1e-6))
                }
            },
            OpCheck("sgd", label, inputs: [], outputs: state([-1...1, -0.1...0.1, -1...1, -1...1]),
                    relative: 1e-5, absolute: 1e-6) { b, _, o in
                for step in 0..<2 {
                    try b.sgd(parameters: o[0], gradients: o[2 + step], momentumBuffer: o[1], segments: segments,
                              step: SGDStep(learningRate: 0.1 * Double(step + 1), weightDecay: 1e-3, momentum: 0.9))
                }
            },
            OpCheck("lamb", label, inputs: [], outputs: state([-1...1, -0.01...0.01, 0...0.01, -1...1, -1...1]),
                    relative: 1e-4, absolute: 1e-6) { b, _, o in
                for step in 1...2 {
                    try b.lamb(parameters: o[0], gradients: o[2 + step], firstMoment: o[1], secondMoment: o[2],
                               segments: segments, step: LAMBStep(learningRate: 1e-2, weightDecay: 0.05, step: step))
                }
            },
            OpCheck("momentumUpdate", "(\(length))", inputs: [input([length])],
                    outputs: [OpOutput(shape: [length], initial: values(length))], relative: 1e-6, absolute: 1e-7) { b, i, o in
                try b.momentumUpdate(target: o[0], source: i[0], momentum: 0.99)
            },
        ]
    }
}
