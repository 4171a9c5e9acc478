// bench-ops: every hand-written kernel on the host and on each OpenCL device, at the shapes
// of a ViT-Tiny/4 (32×32, batch 256) and ViT-S/16 (224×224, batch 32) MoCo v3 step.
//
//   swift run -c release bench-ops [--devices host,cpu0] [--repeats 5] [--cases gelu] [--ceiling-side 2048]
//
// Memory-bound kernels report GB/s (the bytes they must move at least once) next to this
// machine's memcpy bandwidth; compute-bound ones (patch projection, attention) report GFLOP/s
// next to the OpenBLAS sgemm ceiling. Fused attention is compared with the unfused path a
// framework would run (batched GEMM Q·Kᵀ, a row-softmax pass, batched GEMM P·V) on the same
// device. Output: CSV, commentary on lines starting with '#'.
import BenchSupport
import CLBackend
import Foundation
import Tensors

/// `bench-ops`, also `mocov3-cl bench-ops` in the bundle (one binary carries the benchmarks).
public enum OpsBench {
    /// Runs the benchmark with the flags on the command line (`Bench.option`).
    public static func run() throws {
        Bench.warnIfOpenBLASMisdetected()

        let repeats = Int(Bench.option("--repeats") ?? "") ?? 5
        let caseFilter = Bench.option("--cases")
        let catalog = DeviceCatalog()
        let deviceNames = (Bench.option("--devices") ?? (["host"] + catalog.openCLDevices.map(\.name)).joined(separator: ","))
            .split(separator: ",").map(String.init)

        /// One benchmark: its traffic or work, and a setup that allocates inputs on a backend and
        /// returns the timed body.
        struct Case {
            let name: String
            let shape: String
            var bytes: Double = 0
            var flops: Double = 0
            let setup: (any Backend) throws -> () throws -> Void
        }

        var generator = SplitMix64(seed: 3)
        func tensor(_ backend: any Backend, _ shape: [Int], _ range: ClosedRange<Float> = -1...1) throws -> Tensor {
            try backend.makeTensor(randomValues(shape.reduce(1, *), in: range, using: &generator), shape: shape)
        }

        let tokens = 256 * 65, width = 192          // ViT-Tiny/4 on 32×32, batch 256: (B·N, C)
        let hidden = 4 * width
        var cases: [Case] = []

        let n = tokens * hidden
        cases.append(Case(name: "gelu", shape: "\(tokens)x\(hidden)", bytes: 8 * Double(n)) { b in
            let x = try tensor(b, [tokens, hidden], -4...4), y = try b.makeTensor(shape: [tokens, hidden])
            return { try b.gelu(output: y, input: x) }
        })
        cases.append(Case(name: "gelu_backward", shape: "\(tokens)x\(hidden)", bytes: 12 * Double(n)) { b in
            let x = try tensor(b, [tokens, hidden], -4...4), dy = try tensor(b, [tokens, hidden])
            let dx = try b.makeTensor(shape: [tokens, hidden])
            return { try b.geluBackward(inputGradient: dx, outputGradient: dy, input: x) }
        })
        cases.append(Case(name: "add", shape: "\(tokens)x\(width)", bytes: 12 * Double(tokens * width)) { b in
            let x = try tensor(b, [tokens, width]), y = try tensor(b, [tokens, width])
            return { try b.add(output: x, x, y) }
        })
        cases.append(Case(name: "add_bias", shape: "\(tokens)x\(hidden)", bytes: 8 * Double(n)) { b in
            let x = try tensor(b, [tokens, hidden]), bias = try tensor(b, [hidden])
            return { try b.addBias(x, bias: bias) }
        })
        cases.append(Case(name: "sum_rows", shape: "\(tokens)x\(hidden)", bytes: 4 * Double(n)) { b in
            let x = try tensor(b, [tokens, hidden]), out = try tensor(b, [hidden])
            return { try b.sumRows(output: out, input: x) }
        })
        cases.append(Case(name: "layernorm", shape: "\(tokens)x\(width)", bytes: 8 * Double(tokens * width)) { b in
            let x = try tensor(b, [tokens, width]), y = try b.makeTensor(shape: [tokens, width])
            let w = try tensor(b, [width]), bias = try tensor(b, [width])
            let mean = try b.makeTensor(shape: [tokens]), rstd = try b.makeTensor(shape: [tokens])
            return { try b.layerNormForward(output: y, mean: mean, reciprocalStd: rstd, input: x, weight: w, bias: bias, epsilon: 1e-6) }
        })
        cases.append(Case(name: "layernorm_backward", shape: "\(tokens)x\(width)", bytes: 12 * Double(tokens * width)) { b in
            let x = try tensor(b, [tokens, width]), dy = try tensor(b, [tokens, width]), dx = try b.makeTensor(shape: [tokens, width])
            let w = try tensor(b, [width]), dw = try tensor(b, [width]), db = try tensor(b, [width])
            let mean = try b.makeTensor(shape: [tokens]), rstd = try b.makeTensor(shape: [tokens])
            let y = try b.makeTensor(shape: [tokens, width])
            try b.layerNormForward(output: y, mean: mean, reciprocalStd: rstd, input: x, weight: w, bias: db, epsilon: 1e-6)
            return { try b.layerNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db, outputGradient: dy,
                                             input: x, mean: mean, reciprocalStd: rstd, weight: w) }
        })
        let (bnRows, bnColumns) = (256, 4096)      // projection-head BatchNorm1d
        cases.append(Case(name: "batchnorm", shape: "\(bnRows)x\(bnColumns)", bytes: 8 * Double(bnRows * bnColumns)) { b in
            let x = try tensor(b, [bnRows, bnColumns]), y = try b.makeTensor(shape: [bnRows, bnColumns])
            let w = try tensor(b, [bnColumns]), bias = try tensor(b, [bnColumns])
            let mean = try b.makeTensor(shape: [bnColumns]), rstd = try b.makeTensor(shape: [bnColumns])
            let runningMean = try tensor(b, [bnColumns]), runningVariance = try tensor(b, [bnColumns], 0.5...1)
            return { try b.batchNormForward(output: y, savedMean: mean, savedReciprocalStd: rstd, input: x, weight: w, bias: bias,
                                            runningMean: runningMean, runningVariance: runningVariance, momentum: 0.1,
                                            epsilon: 1e-5, training: true) }
        })
        cases.append(Case(name: "batchnorm_backward", shape: "\(bnRows)x\(bnColumns)", bytes: 12 * Double(bnRows * bnColumns)) { b in
            let x = try tensor(b, [bnRows, bnColumns]), y = try b.makeTensor(shape: [bnRows, bnColumns])
            let dy = try tensor(b, [bnRows, bnColumns]), dx = try b.makeTensor(shape: [bnRows, bnColumns])
            let w = try tensor(b, [bnColumns]), bias = try tensor(b, [bnColumns])
            let dw = try tensor(b, [bnColumns]), db = try tensor(b, [bnColumns])
            let mean = try b.makeTensor(shape: [bnColumns]), rstd = try b.makeTensor(shape: [bnColumns])
            let runningMean = try tensor(b, [bnColumns]), runningVariance = try tensor(b, [bnColumns], 0.5...1)
            try b.batchNormForward(output: y, savedMean: mean, savedReciprocalStd: rstd, input: x, weight: w, bias: bias,
                                   runningMean: runningMean, runningVariance: runningVariance, momentum: 0.1, epsilon: 1e-5,
                                   training: true)
            return { try b.batchNormBackward(inputGradient: dx, weightGradient: dw, biasGradient: db, outputGradient: dy,
                                             input: x, savedMean: mean, savedReciprocalStd: rstd, weight: w) }
        })
        let (ceRows, ceColumns) = (99_840, 65)     // the issue's softmax measurement shape
        cases.append(Case(name: "softmax_cross_entropy", shape: "\(ceRows)x\(ceColumns)", bytes: 8 * Double(ceRows * ceColumns)) { b in
            let z = try tensor(b, [ceRows, ceColumns], -5...5), dz = try b.makeTensor(shape: [ceRows, ceColumns])
            let losses = try b.makeTensor(shape: [ceRows])
            let labels = try b.makeTensor((0..<ceRows).map { Int32($0 % ceColumns) }, shape: [ceRows])
            return { try b.softmaxCrossEntropy(losses: losses, logitsGradient: dz, logits: z, labels: labels, scale: 0.4 / Float(ceRows)) }
        })
        cases.append(Case(name: "l2_normalize", shape: "4096x256", bytes: 8 * 4096 * 256) { b in
            let x = try tensor(b, [4096, 256]), y = try b.makeTensor(shape: [4096, 256]), norms = try b.makeTensor(shape: [4096])
            return { try b.l2NormalizeForward(output: y, norms: norms, input: x) }
        })
        // MoCo ViT-Tiny parameters: backbone 5.5 M + projector 18.6 M + predictor 2.1 M ≈ 26 M in ~160 tensors.
        let parameterCount = 26_214_400
        let segments = SegmentTable((0..<160).map { .init(offset: $0 * 163_840, count: 163_840, adapted: $0 % 2 == 0) })
        cases.append(Case(name: "adamw", shape: "\(parameterCount)", bytes: 28 * Double(parameterCount)) { b in
            let p = try tensor(b, [parameterCount]), g = try tensor(b, [parameterCount])
            let m = try tensor(b, [parameterCount], -0.01...0.01), v = try tensor(b, [parameterCount], 0...0.01)
            return { try b.adamw(parameters: p, gradients: g, firstMoment: m, secondMoment: v, segments: segments,
                                 step: AdamWStep(learningRate: 1e-4, weightDecay: 0.1, step: 10)) }
        })
        cases.append(Case(name: "momentum_update", shape: "\(parameterCount)", bytes: 12 * Double(parameterCount)) { b in
            let xi = try tensor(b, [parameterCount]), theta = try tensor(b, [parameterCount])
            return { try b.momentumUpdate(target: xi, source: theta, momentum: 0.99) }
        })
        cases.append(Case(name: "squared_norms", shape: "\(parameterCount)/160", bytes: 4 * Double(parameterCount)) { b in
            let g = try tensor(b, [parameterCount]), out = try b.makeTensor(shape: [160])
            return { try b.squaredNorms(output: out, input: g, segments: segments) }
        })
        // Patch projection, ViT-Tiny/4 at 32×32 (K = 48) and ViT-S/16 at 224 (K = 768).
        for (batch, size, patch, embed) in [(256, 32, 4, 192), (32, 224, 16, 384)] {
            let patches = (size / patch) * (size / patch), inputs = 3 * patch * patch
            let flops = 2 * Double(batch * patches * inputs * embed)
            let label = "B\(batch)_\(size)px_P\(patch)_C\(embed)"
            cases.append(Case(name: "patch_embed", shape: label, flops: flops) { b in
                let images = try tensor(b, [batch, 3, size, size]), weight = try tensor(b, [embed, inputs])
                let bias = try tensor(b, [embed]), out = try b.makeTensor(shape: [batch, patches + 1, embed])
                return { try b.patchEmbedForward(output: out, images: images, weight: weight, bias: bias, patchSize: patch, firstToken: 1) }
            })
            cases.append(Case(name: "patch_embed_backward", shape: label, flops: flops) { b in
                let images = try tensor(b, [batch, 3, size, size]), dy = try tensor(b, [batch, patches + 1, embed])
                let dw = try tensor(b, [embed, inputs]), db = try tensor(b, [embed])
                return { try b.patchEmbedBackward(weightGradient: dw, biasGradient: db, outputGradient: dy, images: images,
                                                  patchSize: patch, firstToken: 1) }
            })
        }
        // Attention: ViT-Tiny/4 (N = 65, 3 heads of 64, batch 256) and ViT-S/16 (N = 197, 12 heads of 32, batch 32).
        for (batch, sequence, heads, headDim) in [(256, 65, 3, 64), (32, 197, 12, 32)] {
            let embed = heads * headDim
            let forwardFlops = 4 * Double(batch * heads * sequence * sequence * headDim)
            let label = "B\(batch)_N\(sequence)_H\(heads)_D\(headDim)"
            cases.append(Case(name: "attention_fused", shape: label, flops: forwardFlops) { b in
                let qkv = try tensor(b, [batch, sequence, 3 * embed]), out = try b.makeTensor(shape: [batch, sequence, embed])
                let lse = try b.makeTensor(shape: [batch, heads, sequence])
                return { try b.attentionForward(output: out, logSumExp: lse, qkv: qkv, heads: heads) }
            })
            cases.append(Case(name: "attention_unfused", shape: label, flops: forwardFlops) { b in
                // Per head: S = Q·Kᵀ/√D batched over images (lda = 3C into qkv), a row pass of softmax
                // (the fused cross-entropy kernel: same three passes), O = P·V into the head's columns.
                let qkv = try tensor(b, [batch, sequence, 3 * embed]), out = try b.makeTensor(shape: [batch, sequence, embed])
                let scores = try b.makeTensor(shape: [batch * sequence, sequence])
                let probabilities = try b.makeTensor(shape: [batch * sequence, sequence])
                let losses = try b.makeTensor(shape: [batch * sequence])
                let labels = try b.makeTensor([Int32](repeating: 0, count: batch * sequence), shape: [batch * sequence])
                var qk = GEMMShape(m: sequence, n: sequence, k: headDim, transposeB: true, batch: batch)
                (qk.lda, qk.ldb, qk.strideA, qk.strideB) = (3 * embed, 3 * embed, sequence * 3 * embed, sequence * 3 * embed)
                var pv = GEMMShape(m: sequence, n: headDim, k: sequence, batch: batch)
                (pv.ldb, pv.ldc, pv.strideB, pv.strideC) = (3 * embed, embed, sequence * 3 * embed, sequence * embed)
                return {
                    for h in 0..<heads {
                        try b.gemm(qk, alpha: 1 / Float(headDim).squareRoot(), a: qkv.view(offset: h * headDim, shape: [qkv.count - h * headDim]),
                                   b: qkv.view(offset: embed + h * headDim, shape: [qkv.count - embed - h * headDim]), beta: 0, c: scores)
                        try b.softmaxCrossEntropy(losses: losses, logitsGradient: probabilities, logits: scores, labels: labels, scale: 1)
                        try b.gemm(pv, alpha: 1, a: probabilities,
                                   b: qkv.view(offset: 2 * embed + h * headDim, shape: [qkv.count - 2 * embed - h * headDim]),
                                   beta: 0, c: out.view(offset: h * headDim, shape: [out.count - h * headDim]))
                    }
                }
            })
            cases.append(Case(name: "attention_fused_backward", shape: label, flops: 2.5 * forwardFlops) { b in
                let qkv = try tensor(b, [batch, sequence, 3 * embed]), out = try b.makeTensor(shape: [batch, sequence, embed])
                let lse = try b.makeTensor(shape: [batch, heads, sequence]), dout = try tensor(b, [batch, sequence, embed])
                let dqkv = try b.makeTensor(shape: [batch, sequence, 3 * embed])
                try b.attentionForward(output: out, logSumExp: lse, qkv: qkv, heads: heads)
                return { try b.attentionBackward(qkvGradient: dqkv, outputGradient: dout, qkv: qkv, output: out, logSumExp: lse, heads: heads) }
            })
        }

        let bandwidth = Bench.copyBandwidth(repeats: repeats)
        let ceiling = try Bench.sgemmCeiling(repeats: 3)
        print("# machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; memcpy \(String(format: "%.1f", bandwidth)) GB/s (read + write); "
              + "OpenBLAS sgemm 2048^3 \(String(format: "%.1f", ceiling)) GFLOP/s")
        print("device,kernel,shape,median_ms,rate,unit,ceiling,percent_of_ceiling,device_ceiling,percent_of_device_ceiling")
        // Each OpenCL device's own ceilings: its driver's buffer copy and CLBlast sgemm (--ceiling-side³,
        // 2048 by default; a GPU needs 4096 or more), so a GPU's rates read against that GPU.
        let ceilingSide = Int(Bench.option("--ceiling-side") ?? "") ?? 2048
        for deviceName in deviceNames {
            let backend = try catalog.makeBackend(requested: deviceName)
            var deviceBandwidth = bandwidth, deviceCeiling = ceiling
            if let device = backend as? CLBackend {
                deviceBandwidth = try Bench.copyBandwidth(on: device, repeats: repeats)
                deviceCeiling = try Bench.sgemmCeiling(on: try catalog.makeBackend(requested: deviceName, gemmProvider: .clblast),
                                                       side: ceilingSide, repeats: 3)
                print("# \(deviceName): clEnqueueCopyBuffer \(String(format: "%.1f", deviceBandwidth)) GB/s (read + write); "
                      + "CLBlast sgemm \(ceilingSide)^3 \(String(format: "%.1f", deviceCeiling)) GFLOP/s")
            }
            for testCase in cases where caseFilter.map({ testCase.name.contains($0) }) ?? true {
                let body = try testCase.setup(backend)
                let seconds = try Bench.time(backend, repeats: repeats, body)
                let (rate, unit, limit, deviceLimit) = testCase.flops > 0
                    ? (testCase.flops / seconds / 1e9, "GFLOP/s", ceiling, deviceCeiling)
                    : (testCase.bytes / seconds / 1e9, "GB/s", bandwidth, deviceBandwidth)
                print([deviceName, testCase.name, testCase.shape, String(format: "%.3f", seconds * 1e3), String(format: "%.1f", rate),
                       unit, String(format: "%.1f", limit), String(format: "%.0f", 100 * rate / limit),
                       String(format: "%.1f", deviceLimit), String(format: "%.0f", 100 * rate / deviceLimit)].joined(separator: ","))
                fflush(stdout)
            }
        }
    }
}
