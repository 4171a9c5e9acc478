import Foundation
import Tensors
import Testing
import TestSupport

/// The host backend's fast Float paths (erfc-fit GELU, in-place parallel LayerNorm, BatchNorm,
/// attention, softmax cross-entropy, the streaming ops) against the generic references
/// evaluated in Double on the same Float inputs, at real shapes and at odd ones (one row, rows
/// not divisible by the chunk count, sizes below the parallel threshold); and run to run
/// determinism, bit for bit, which the trainer's resume test relies on.
@Suite struct HostFastPathTests {
    let host = HostBackend()

    /// (rows, columns): ViT-Tiny/4 rows (B·N = 64·17), an odd row count above the parallel
    /// threshold, one row, and a shape below it.
    static let shapes: [(Int, Int)] = [(1088, 192), (1001, 97), (1, 192), (7, 33)]

    /// Records one failure naming the worst element unless `|a − r| ≤ atol + rtol·|r|` everywhere.
    func expectNear(_ actual: [Float], _ expected: [Double], relative: Double = 1e-4, absolute: Double = 1e-5,
                    _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard actual.count == expected.count else {
            Issue.record("\(context): \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
            return
        }
        var worst = (index: 0, ratio: 0.0)
        for i in actual.indices {
            let difference = abs(Double(actual[i]) - expected[i])
            let ratio = difference == 0 ? 0 : difference / (absolute + relative * abs(expected[i]))
            if !(ratio <= worst.ratio) { worst = (i, ratio.isNaN ? .infinity : ratio) }
        }
        if worst.ratio > 1 {
            let message = "\(context): worst element \(worst.index): \(actual[worst.index]) vs "
                + "\(expected[worst.index]) (\(worst.ratio)× the tolerance rtol \(relative), atol \(absolute))"
            Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
        }
    }

    func random(_ count: Int, _ range: ClosedRange<Float> = -1...1, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return randomValues(count, in: range, using: &generator)
    }

    func doubles(_ values: [Float]) -> [Double] { values.map(Double.init) }

    // MARK: GELU

    @Test(arguments: [1088 * 768, 1001 * 97, 1, 33])
    func geluMatchesDoubleReference(count: Int) throws {
        let x = random(count, -6...6, seed: 1), dy = random(count, seed: 2)
        let input = try host.makeTensor(x, shape: [count]), gradient = try host.makeTensor(dy, shape: [count])
        let y = try host.makeTensor(shape: [count]), dx = try host.makeTensor(shape: [count])
        try host.gelu(output: y, input: input)
        try host.geluBackward(inputGradient: dx, outputGradient: gradient, input: input)
        // The fit's 1.2e-7 plus a few float roundings: 1e-6 relative is ample.
        expectNear(try host.download(y), x.map { ElementwiseReference.gelu(Double($0)) }, relative: 1e-6,
                   absolute: 1e-7, "gelu (\(count))")
        expectNear(try host.download(dx), zip(x, dy).map { Double($1) * ElementwiseReference.geluDerivative(Double($0)) },
                   relative: 1e-6, absolute: 1e-7, "geluBackward (\(count))")
    }

    /// The host's GELU loops (CHostKernels), each variant this CPU runs (AVX-512F, AVX2, the
    /// baseline), give FastGELU's bits exactly, forward and backward, on random inputs over the
    /// whole useful range and beyond, the tails, ±0, ±∞ and NaN, at lengths that leave every
    /// vector-remainder size (1 … 33, and a long odd one), into NaN-poisoned outputs whose element
    /// past the end must stay NaN.
    @Test func geluLoopsGiveTheSwiftReferencesBits() throws {
        var values = random(4097, -12...12, seed: 7) + random(1003, -0.01...0.01, seed: 8)
        values += [0, -0.0, 1e-30, -1e-30, -87, -88, 88, 90, -200, .infinity, -.infinity, .nan, 7.5, -7.5]
        let gradient = random(values.count, seed: 9)
        defer { FastGELU.useInstructionSet(nil) }
        var tested: [String] = []
        for isa in ["baseline", "avx2", "avx512f"] where FastGELU.useInstructionSet(isa) {
            #expect(FastGELU.instructionSet == isa)
            tested.append(isa)
            for count in Array(1...33) + [values.count] {
                let x = Array(values.prefix(count)), dy = Array(gradient.prefix(count))
                let canary: Float = -1234.5
                let input = try host.makeTensor(x + [canary], shape: [count + 1])
                let outputGradient = try host.makeTensor(dy + [canary], shape: [count + 1])
                let y = try host.makeTensor([Float](repeating: .nan, count: count + 1), shape: [count + 1])
                let dx = try host.makeTensor([Float](repeating: .nan, count: count + 1), shape: [count + 1])
                try host.gelu(output: y.view(offset: 0, shape: [count]), input: input.view(offset: 0, shape: [count]))
                try host.geluBackward(inputGradient: dx.view(offset: 0, shape: [count]),
                                      outputGradient: outputGradient.view(offset: 0, shape: [count]),
                                      input: input.view(offset: 0, shape: [count]))
                let (forward, backward) = (try host.download(y), try host.download(dx))
                #expect(forward.last!.isNaN && backward.last!.isNaN, "the element after \(count) was written")
                for i in 0..<count {
                    let (f, b) = (FastGELU.gelu(x[i]), dy[i] * FastGELU.geluDerivative(x[i]))
                    #expect(forward[i].bitPattern == f.bitPattern || (forward[i].isNaN && f.isNaN),
                            "gelu(\(x[i])): \(forward[i]) against \(f) (\(FastGELU.instructionSet))")
                    #expect(backward[i].bitPattern == b.bitPattern || (backward[i].isNaN && b.isNaN),
                            "geluBackward(\(x[i])): \(backward[i]) against \(b) (\(FastGELU.instructionSet))")
                }
            }
        }
        #expect(tested.first == "baseline")
        print("host GELU loops tested: \(tested.joined(separator: ", "))")
    }

    /// Far tails, zero and tiny inputs, compared relatively (atol 1e-38): the tail is taken
    /// without `1 − erf` cancellation, so Φ(−10) ≈ 7.6e-24 keeps its digits.
    @Test func geluTails() throws {
        let x: [Float] = [-10, 10, -5, 5, -3, 3, -0.5, 0.5, 0, 1e-30, -1e-30, 1e-5, -1e-5, -9.5, 8]
        let input = try host.makeTensor(x, shape: [x.count]), ones = try host.makeTensor([Float](repeating: 1, count: x.count), shape: [x.count])
        let y = try host.makeTensor(shape: [x.count]), dx = try host.makeTensor(shape: [x.count])
        try host.gelu(output: y, input: input)
        try host.geluBackward(inputGradient: dx, outputGradient: ones, input: input)
        // The reference's own `1 + erf` cancels to 0 below x ≈ −8 even in Double, so here Φ is
        // libm's Double `erfc(−x/√2)/2`. At x = −10 the exponent −x²/2 + P carries float rounding
        // of ~50·1e-7 absolute, so the tails get 1e-4 relative; elsewhere the fit is good to ~1e-7.
        func phi(_ x: Double) -> Double { erfc(-x / 2.0.squareRoot()) / 2 }
        expectNear(try host.download(y), x.map { Double($0) * phi(Double($0)) }, relative: 1e-4,
                   absolute: 1e-38, "gelu tails")
        expectNear(try host.download(dx), x.map { x in
            let v = Double(x)
            return phi(v) + v * exp(-v * v / 2) / (2 * Double.pi).squareRoot()
        }, relative: 1e-4, absolute: 1e-38, "geluBackward tails")
        #expect(try host.download(y)[8] == 0)
    }

    // MARK: Streaming ops

    @Test(arguments: shapes)
    func streamingOpsMatchDoubleReference(rows: Int, columns: Int) throws {
        let count = rows * columns
        let a = random(count, seed: 3), b = random(count, seed: 4), bias = random(columns, seed: 5)
        let initial = random(columns, seed: 6)
        let ta = try host.makeTensor(a, shape: [rows, columns]), tb = try host.makeTensor(b, shape: [rows, columns])
        let out = try host.makeTensor(shape: [rows, columns])
        try host.add(output: out, ta, tb)
        expectNear(try host.download(out), zip(a, b).map { Double($0) + Double($1) }, relative: 1e-7, absolute: 0, "add")
        try host.relu(output: out, input: ta)
        expectNear(try host.download(out), a.map { max(Double($0), 0) }, relative: 0, absolute: 0, "relu")
        try host.reluBackward(inputGradient: out, outputGradient: tb, output: ta)
        expectNear(try host.download(out), zip(a, b).map { $0 > 0 ? Double($1) : 0 }, relative: 0, absolute: 0,
                   "reluBackward")
        let scaled = try host.makeTensor(a, shape: [rows, columns])
        try host.scale(scaled, by: 0.37)
        expectNear(try host.download(scaled), a.map { Double($0) * Double(Float(0.37)) }, relative: 1e-7, absolute: 0,
                   "scale")
        let biased = try host.makeTensor(a, shape: [rows, columns])
        try host.addBias(biased, bias: try host.makeTensor(bias, shape: [columns]))
        expectNear(try host.download(biased), a.indices.map { Double(a[$0]) + Double(bias[$0 % columns]) },
                   relative: 1e-7, absolute: 0, "addBias")
        let sums = try host.makeTensor(initial, shape: [columns])
        try host.sumRows(output: sums, input: ta)
        let expected = (0..<columns).map { c in (0..<rows).reduce(Double(initial[c])) { $0 + Double(a[$1 * columns + c]) } }
        expectNear(try host.download(sums), expected, relative: 1e-6, absolute: 1e-6, "sumRows")
    }

    // MARK: LayerNorm

    @Test(arguments: shapes)
    func layerNormMatchesDoubleReference(rows: Int, columns: Int) throws {
        let x = random(rows * columns, -3...5, seed: 7), w = random(columns, 0.5...1.5, seed: 8)
        let b = random(columns, seed: 9), dy = random(rows * columns, seed: 10)
        let dw0 = random(columns, seed: 11), db0 = random(columns, seed: 12)
        let tx = try host.makeTensor(x, shape: [rows, columns]), tw = try host.makeTensor(w, shape: [columns])
        let y = try host.makeTensor(shape: [rows, columns])
        let mean = try host.makeTensor(shape: [rows]), rstd = try host.makeTensor(shape: [rows])
        try host.layerNormForward(output: y, mean: mean, reciprocalStd: rstd, input: tx, weight: tw,
                                  bias: try host.makeTensor(b, shape: [columns]), epsilon: 1e-6)
        let reference = LayerNormReference.forward(input: doubles(x), weight: doubles(w), bias: doubles(b), epsilon: 1e-6)
        expectNear(try host.download(y), reference.output, relative: 1e-6, absolute: 1e-6, "layerNorm output")
        expectNear(try host.download(mean), reference.mean, relative: 1e-6, absolute: 1e-7, "layerNorm mean")
        expectNear(try host.download(rstd), reference.reciprocalStd, relative: 1e-6, absolute: 0, "layerNorm rstd")

        let dx = try host.makeTensor(shape: [rows, columns])
        let dw = try host.makeTensor(dw0, shape: [columns]), db = try host.makeTensor(db0, shape: [columns])
        try host.layerNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db,
                                   outputGradient: try host.makeTensor(dy, shape: [rows, columns]), input: tx,
                                   mean: mean, reciprocalStd: rstd, weight: tw)
        // The backward from the same saved (Float) statistics, in Double.
        let backward = LayerNormReference.backward(outputGradient: doubles(dy), input: doubles(x),
                                                   mean: doubles(try host.download(mean)),
                                                   reciprocalStd: doubles(try host.download(rstd)), weight: doubles(w))
        expectNear(try host.download(dx), backward.inputGradient, relative: 1e-5, absolute: 1e-6, "layerNorm dx")
        expectNear(try host.download(dw), zip(dw0, backward.weightGradient).map { Double($0) + $1 }, relative: 1e-6,
                   absolute: 1e-6, "layerNorm dw")
        expectNear(try host.download(db), zip(db0, backward.biasGradient).map { Double($0) + $1 }, relative: 1e-6,
                   absolute: 1e-6, "layerNorm db")
    }

    /// In-place LayerNorm backward (dx written over dy), which the reference-based version allowed.
    @Test func layerNormBackwardInPlace() throws {
        let (rows, columns) = (1001, 97)
        let x = random(rows * columns, seed: 13), dy = random(rows * columns, seed: 14), w = random(columns, seed: 15)
        let tx = try host.makeTensor(x, shape: [rows, columns]), tw = try host.makeTensor(w, shape: [columns])
        let y = try host.makeTensor(shape: [rows, columns])
        let mean = try host.makeTensor(shape: [rows]), rstd = try host.makeTensor(shape: [rows])
        try host.layerNormForward(output: y, mean: mean, reciprocalStd: rstd, input: tx, weight: tw, bias: tw, epsilon: 1e-6)
        func run(inPlace: Bool) throws -> [[Float]] {
            let gradient = try host.makeTensor(dy, shape: [rows, columns])
            let dx = inPlace ? gradient : try host.makeTensor(shape: [rows, columns])
            let dw = try host.makeTensor(shape: [columns]), db = try host.makeTensor(shape: [columns])
            try host.fill(dw, value: 0)
            try host.fill(db, value: 0)
            try host.layerNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db, outputGradient: gradient,
                                       input: tx, mean: mean, reciprocalStd: rstd, weight: tw)
            return try [host.download(dx), host.download(dw), host.download(db)]
        }
        #expect(try run(inPlace: true) == run(inPlace: false))
    }

    // MARK: BatchNorm

    @Test(arguments: [(256, 4096), (33, 97), (2, 5)], [true, false])
    func batchNormMatchesDoubleReference(shape: (Int, Int), affine: Bool) throws {
        let (rows, columns) = shape
        let x = random(rows * columns, -2...3, seed: 16), dy = random(rows * columns, seed: 17)
        let w = random(columns, 0.5...1.5, seed: 18), b = random(columns, seed: 19)
        let runMean = random(columns, seed: 20), runVar = random(columns, 0.5...2, seed: 21)
        let tx = try host.makeTensor(x, shape: [rows, columns])
        let tw = affine ? try host.makeTensor(w, shape: [columns]) : nil
        let tb = affine ? try host.makeTensor(b, shape: [columns]) : nil
        let y = try host.makeTensor(shape: [rows, columns])
        let mean = try host.makeTensor(shape: [columns]), rstd = try host.makeTensor(shape: [columns])
        let rm = try host.makeTensor(runMean, shape: [columns]), rv = try host.makeTensor(runVar, shape: [columns])
        try host.batchNormForward(output: y, savedMean: mean, savedReciprocalStd: rstd, input: tx, weight: tw, bias: tb,
                                  runningMean: rm, runningVariance: rv, momentum: 0.1, epsilon: 1e-5, training: true)
        let reference = BatchNormReference.forward(input: doubles(x), weight: affine ? doubles(w) : nil,
                                                   bias: affine ? doubles(b) : nil, runningMean: doubles(runMean),
                                                   runningVariance: doubles(runVar), momentum: 0.1, epsilon: 1e-5,
                                                   training: true)
        expectNear(try host.download(y), reference.output, relative: 1e-6, absolute: 1e-6, "batchNorm output")
        expectNear(try host.download(mean), reference.savedMean, relative: 1e-6, absolute: 1e-7, "batchNorm mean")
        expectNear(try host.download(rstd), reference.savedReciprocalStd, relative: 1e-6, absolute: 0, "batchNorm rstd")
        expectNear(try host.download(rm), reference.runningMean, relative: 1e-6, absolute: 1e-7, "running mean")
        expectNear(try host.download(rv), reference.runningVariance, relative: 1e-6, absolute: 0, "running variance")

        let dx = try host.makeTensor(shape: [rows, columns])
        let dw = try host.makeTensor([Float](repeating: 0.25, count: columns), shape: [columns])
        let db = try host.makeTensor([Float](repeating: -0.5, count: columns), shape: [columns])
        try host.batchNormBackward(inputGradient: dx, weightGradient: affine ? dw : nil, biasGradient: affine ? db : nil,
                                   outputGradient: try host.makeTensor(dy, shape: [rows, columns]), input: tx,
                                   savedMean: mean, savedReciprocalStd: rstd, weight: tw)
        let backward = BatchNormReference.backward(outputGradient: doubles(dy), input: doubles(x),
                                                   savedMean: doubles(try host.download(mean)),
                                                   savedReciprocalStd: doubles(try host.download(rstd)),
                                                   weight: affine ? doubles(w) : nil)
        expectNear(try host.download(dx), backward.inputGradient, relative: 1e-5, absolute: 1e-6, "batchNorm dx")
        if affine {
            expectNear(try host.download(dw), backward.weightGradient.map { $0 + 0.25 }, relative: 1e-6, absolute: 1e-6,
                       "batchNorm dw")
            expectNear(try host.download(db), backward.biasGradient.map { $0 - 0.5 }, relative: 1e-6, absolute: 1e-6,
                       "batchNorm db")
        }
    }

    // MARK: Attention

    @Test(arguments: [AttentionGeometry(batch: 16, tokens: 17, width: 192, heads: 3),
                      AttentionGeometry(batch: 3, tokens: 5, width: 12, heads: 2),
                      AttentionGeometry(batch: 1, tokens: 1, width: 8, heads: 1),
                      AttentionGeometry(batch: 5, tokens: 65, width: 64, heads: 2)])
    func attentionMatchesDoubleReference(geometry g: AttentionGeometry) throws {
        let qkv = random(g.batch * g.tokens * g.qkvWidth, -2...2, seed: 22)
        let dOut = random(g.batch * g.tokens * g.width, seed: 23)
        let tqkv = try host.makeTensor(qkv, shape: [g.batch, g.tokens, g.qkvWidth])
        let out = try host.makeTensor(shape: g.outputShape), lse = try host.makeTensor(shape: g.statisticShape)
        try host.attentionForward(output: out, logSumExp: lse, qkv: tqkv, heads: g.heads)
        let reference = AttentionReference.forward(qkv: doubles(qkv), geometry: g)
        expectNear(try host.download(out), reference.output, relative: 1e-4, absolute: 1e-5, "attention output \(g)")
        expectNear(try host.download(lse), reference.logSumExp, relative: 1e-5, absolute: 1e-5, "attention lse \(g)")

        let dqkv = try host.makeTensor(shape: [g.batch, g.tokens, g.qkvWidth])
        try host.attentionBackward(qkvGradient: dqkv, outputGradient: try host.makeTensor(dOut, shape: g.outputShape),
                                   qkv: tqkv, output: out, logSumExp: lse, heads: g.heads)
        let gradient = AttentionReference.backward(outputGradient: doubles(dOut), qkv: doubles(qkv),
                                                   output: doubles(try host.download(out)),
                                                   logSumExp: doubles(try host.download(lse)), geometry: g)
        expectNear(try host.download(dqkv), gradient, relative: 1e-4, absolute: 1e-5, "attention dqkv \(g)")
    }

    // MARK: Softmax cross-entropy

    @Test(arguments: [(4096, 65), (1001, 97), (1, 7)])
    func softmaxCrossEntropyMatchesDoubleReference(rows: Int, columns: Int) throws {
        let z = random(rows * columns, -8...8, seed: 24)
        var generator = SplitMix64(seed: 25)
        let labels = (0..<rows).map { _ in Int32.random(in: 0..<Int32(columns), using: &generator) }
        let losses = try host.makeTensor(shape: [rows]), dz = try host.makeTensor(shape: [rows, columns])
        try host.softmaxCrossEntropy(losses: losses, logitsGradient: dz, logits: try host.makeTensor(z, shape: [rows, columns]),
                                     labels: try host.makeTensor(labels, shape: [rows]), scale: 0.5)
        var expectedLoss = [Double](repeating: 0, count: rows), expectedGradient = [Double](repeating: 0, count: rows * columns)
        let logits = doubles(z)
        for r in 0..<rows {
            expectedLoss[r] = logits.withUnsafeBufferPointer { all in
                expectedGradient.withUnsafeMutableBufferPointer { gradient in
                    LossReference.softmaxCrossEntropy(
                        logits: UnsafeBufferPointer(rebasing: all[r * columns..<(r + 1) * columns]), label: Int(labels[r]),
                        scale: 0.5, gradient: UnsafeMutableBufferPointer(rebasing: gradient[r * columns..<(r + 1) * columns]))
                }
            }
        }
        expectNear(try host.download(losses), expectedLoss, relative: 1e-5, absolute: 1e-6, "softmax CE losses")
        expectNear(try host.download(dz), expectedGradient, relative: 1e-4, absolute: 1e-6, "softmax CE gradient")
    }

    // MARK: Determinism

    /// Every changed op twice on the same inputs, at sizes that do run in parallel: identical bits.
    @Test func resultsAreBitIdenticalFromRunToRun() throws {
        let (rows, columns) = (2176, 192)
        let x = random(rows * columns, -3...3, seed: 26), dy = random(rows * columns, seed: 27)
        let w = random(columns, 0.5...1.5, seed: 28)
        let g = AttentionGeometry(batch: 32, tokens: 17, width: 192, heads: 3)
        let qkv = random(g.batch * g.tokens * g.qkvWidth, seed: 29), dOut = random(g.batch * g.tokens * g.width, seed: 30)
        func once() throws -> [[Float]] {
            let tx = try host.makeTensor(x, shape: [rows, columns]), tdy = try host.makeTensor(dy, shape: [rows, columns])
            let tw = try host.makeTensor(w, shape: [columns])
            let y = try host.makeTensor(shape: [rows, columns]), dx = try host.makeTensor(shape: [rows, columns])
            let mean = try host.makeTensor(shape: [rows]), rstd = try host.makeTensor(shape: [rows])
            let dw = try host.makeTensor(w, shape: [columns]), db = try host.makeTensor(w, shape: [columns])
            let sums = try host.makeTensor(w, shape: [columns])
            var results: [[Float]] = []
            try host.gelu(output: y, input: tx)
            results.append(try host.download(y))
            try host.geluBackward(inputGradient: dx, outputGradient: tdy, input: tx)
            results.append(try host.download(dx))
            try host.sumRows(output: sums, input: tdy)
            results.append(try host.download(sums))
            try host.layerNormForward(output: y, mean: mean, reciprocalStd: rstd, input: tx, weight: tw, bias: tw, epsilon: 1e-6)
            try host.layerNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db, outputGradient: tdy,
                                       input: tx, mean: mean, reciprocalStd: rstd, weight: tw)
            results += try [y, mean, rstd, dx, dw, db].map { try host.download($0) }
            let bnMean = try host.makeTensor(shape: [columns]), bnRstd = try host.makeTensor(shape: [columns])
            let rm = try host.makeTensor(w, shape: [columns]), rv = try host.makeTensor(w, shape: [columns])
            try host.batchNormForward(output: y, savedMean: bnMean, savedReciprocalStd: bnRstd, input: tx, weight: tw,
                                      bias: tw, runningMean: rm, runningVariance: rv, momentum: 0.1, epsilon: 1e-5,
                                      training: true)
            try host.batchNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db, outputGradient: tdy,
                                       input: tx, savedMean: bnMean, savedReciprocalStd: bnRstd, weight: tw)
            results += try [y, bnMean, bnRstd, rm, rv, dx, dw, db].map { try host.download($0) }
            let tqkv = try host.makeTensor(qkv, shape: [g.batch, g.tokens, g.qkvWidth])
            let out = try host.makeTensor(shape: g.outputShape), lse = try host.makeTensor(shape: g.statisticShape)
            let dqkv = try host.makeTensor(shape: [g.batch, g.tokens, g.qkvWidth])
            try host.attentionForward(output: out, logSumExp: lse, qkv: tqkv, heads: g.heads)
            try host.attentionBackward(qkvGradient: dqkv, outputGradient: try host.makeTensor(dOut, shape: g.outputShape),
                                       qkv: tqkv, output: out, logSumExp: lse, heads: g.heads)
            results += try [out, lse, dqkv].map { try host.download($0) }
            return results
        }
        let first = try once(), second = try once()
        for (index, (a, b)) in zip(first, second).enumerated() {
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "output \(index) differs between two runs")
        }
    }
}
