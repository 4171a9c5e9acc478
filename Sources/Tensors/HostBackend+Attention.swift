import COpenBLAS
import RealModule

/// The sizes of one multi-head attention op, validated from the tensors' shapes.
public struct AttentionGeometry: Equatable, Sendable, CustomStringConvertible {
    public let batch: Int, tokens: Int, width: Int, heads: Int

    /// D = C/H.
    public var headDim: Int { width / heads }
    /// Elements per qkv row, 3C.
    public var qkvWidth: Int { 3 * width }

    /// Sizes given directly (the reference and tests); `heads` must divide `width`.
    public init(batch: Int, tokens: Int, width: Int, heads: Int) {
        precondition(batch >= 0 && tokens >= 0 && heads > 0 && width % heads == 0,
                     "attention geometry B=\(batch) N=\(tokens) C=\(width) H=\(heads)")
        self.batch = batch
        self.tokens = tokens
        self.width = width
        self.heads = heads
    }

    /// Reads B, N, C from qkv (B, N, 3C) and checks that `heads` divides C.
    public init(qkv: Tensor, heads: Int, operation: String) throws {
        func fail(_ reason: String) -> BackendError { .invalidArgument(operation: operation, reason: reason) }
        guard qkv.shape.count == 3 else { throw fail("qkv must be (B, N, 3C), got shape \(qkv.shape)") }
        guard qkv.shape[2] % 3 == 0 else {
            throw fail("qkv's last dimension \(qkv.shape[2]) is not 3C (Q, K and V side by side)")
        }
        let width = qkv.shape[2] / 3
        guard heads > 0, width % heads == 0, width > 0 else {
            throw fail("\(heads) heads do not divide the width C = \(width)")
        }
        self.init(batch: qkv.shape[0], tokens: qkv.shape[1], width: width, heads: heads)
    }

    /// Throws unless `tensor` has exactly the shape the op expects.
    public func expect(_ tensor: Tensor, _ name: String, _ shape: [Int], operation: String) throws {
        guard tensor.shape == shape else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "\(name) must have shape \(shape) for qkv (\(batch), \(tokens), \(qkvWidth)) with \(heads) heads, "
                + "got \(tensor.shape)")
        }
    }

    /// (B, N, C): output and output gradient.
    public var outputShape: [Int] { [batch, tokens, width] }
    /// (B, H, N): the saved log-sum-exp.
    public var statisticShape: [Int] { [batch, heads, tokens] }

    public var description: String { "B=\(batch) N=\(tokens) C=\(width) H=\(heads) D=\(headDim)" }
}

/// Reference math for kernels/cl/attention.cl, written to be obviously right: timm's
/// `Attention.forward` (`attn = (q @ k.transpose(-2, -1)) * scale; attn.softmax(-1); attn @ v`)
/// one (b, h, query) at a time, and its backward from the chain rule, in any precision (the
/// finite-difference test runs it in Double).
public enum AttentionReference {
    /// Returns output (B, N, C) and logSumExp (B, H, N) for qkv (B, N, 3C), all flat row-major.
    public static func forward<T: Real & BinaryFloatingPoint>(qkv: [T], geometry g: AttentionGeometry)
        -> (output: [T], logSumExp: [T]) {
        precondition(qkv.count == g.batch * g.tokens * g.qkvWidth, "qkv has \(qkv.count) elements for \(g)")
        let (n, c, d) = (g.tokens, g.width, g.headDim)
        let scale = 1 / T(d).squareRoot()
        var output = [T](repeating: 0, count: g.batch * n * c)
        var logSumExp = [T](repeating: 0, count: g.batch * g.heads * n)
        for b in 0..<g.batch {
            for h in 0..<g.heads {
                for i in 0..<n {
                    let scores = (0..<n).map { j in scale * dot(qkv, qkvIndex(g, b, i, 0, h), qkv, qkvIndex(g, b, j, 1, h), d) }
                    let maximum = scores.max()!
                    let lse = maximum + T.log(scores.reduce(0) { $0 + T.exp($1 - maximum) })
                    logSumExp[(b * g.heads + h) * n + i] = lse
                    for j in 0..<n {
                        let p = T.exp(scores[j] - lse)
                        for e in 0..<d { output[(b * n + i) * c + h * d + e] += p * qkv[qkvIndex(g, b, j, 2, h) + e] }
                    }
                }
            }
        }
        return (output, logSumExp)
    }

    /// Returns qkvGradient (B, N, 3C) given outputGradient (B, N, C) and the forward's saved values.
    public static func backward<T: Real & BinaryFloatingPoint>(outputGradient: [T], qkv: [T], output: [T],
                                                               logSumExp: [T], geometry g: AttentionGeometry) -> [T] {
        let (n, c, d) = (g.tokens, g.width, g.headDim)
        let scale = 1 / T(d).squareRoot()
        var gradient = [T](repeating: 0, count: qkv.count)
        for b in 0..<g.batch {
            for h in 0..<g.heads {
                let outputAt = { (i: Int) in (b * n + i) * c + h * d }
                // Δ_i = Σ_j P_ij dP_ij = dO_i · O_i (the softmax Jacobian's rank-one part).
                let delta = (0..<n).map { i in dot(outputGradient, outputAt(i), output, outputAt(i), d) }
                for i in 0..<n {
                    let lse = logSumExp[(b * g.heads + h) * n + i]
                    for j in 0..<n {
                        let (q, k, v) = (qkvIndex(g, b, i, 0, h), qkvIndex(g, b, j, 1, h), qkvIndex(g, b, j, 2, h))
                        let p = T.exp(scale * dot(qkv, q, qkv, k, d) - lse)
                        let dp = dot(outputGradient, outputAt(i), qkv, v, d)
                        let ds = p * (dp - delta[i])
                        for e in 0..<d {
                            gradient[v + e] += p * outputGradient[outputAt(i) + e]
                            gradient[q + e] += scale * ds * qkv[k + e]
                            gradient[k + e] += scale * ds * qkv[q + e]
                        }
                    }
                }
            }
        }
        return gradient
    }

    /// Index of element 0 of head h's slice s (0 Q, 1 K, 2 V) in token n of image b.
    static func qkvIndex(_ g: AttentionGeometry, _ b: Int, _ n: Int, _ s: Int, _ h: Int) -> Int {
        (b * g.tokens + n) * g.qkvWidth + s * g.width + h * g.headDim
    }

    static func dot<T: BinaryFloatingPoint>(_ x: [T], _ xStart: Int, _ y: [T], _ yStart: Int, _ count: Int) -> T {
        var sum: T = 0
        for e in 0..<count { sum += x[xStart + e] * y[yStart + e] }
        return sum
    }
}

// The host ops: per (b, h), two or four OpenBLAS GEMMs that read Q, K, V in place from qkv
// (lda = 3C) and write heads in place (ldc = C or 3C), around an N x N score matrix in scratch.
// Every GEMM target is zeroed first because OpenBLAS may read C even with beta = 0 (see
// HostBackend.gemm), and outputs can hold NaN.
extension HostBackend {
    public func attentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor, heads: Int) throws {
        let g = try checkAttentionForward(output: output, logSumExp: logSumExp, qkv: qkv, heads: heads)
        guard g.batch > 0, g.tokens > 0 else { return }
        let (n, c, d) = (g.tokens, g.width, g.headDim)
        let scale = 1 / Float(d).squareRoot()
        let source = pointer(qkv), target = pointer(output), lse = pointer(logSumExp)
        target.update(repeating: 0, count: output.count)
        // (b, h) pairs split over cores; each chunk has its own score scratch and writes only its
        // heads' columns of output and its rows of logSumExp.
        HostParallel.withSingleThreadedBLAS {
        HostParallel.forEachChunk(count: g.batch * heads, minimumChunk: Self.attentionPairGrain(g)) { pairs in
            var scratch = [Float](repeating: 0, count: n * n)
            scratch.withUnsafeMutableBufferPointer { buffer in
                let scores = buffer.baseAddress!
                for pair in pairs {
                    let (b, h) = pair.quotientAndRemainder(dividingBy: heads)
                    let q = source + b * n * g.qkvWidth + h * d, k = q + c, v = q + 2 * c
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(d), scale,
                                q, Int32(g.qkvWidth), k, Int32(g.qkvWidth), 0, scores, Int32(n))
                    for i in 0..<n {
                        lse[(b * heads + h) * n + i] = Self.softmaxInPlace(scores + i * n, count: n)
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(n), 1,
                                scores, Int32(n), v, Int32(g.qkvWidth), 0, target + b * n * c + h * d, Int32(c))
                }
            }
        }
        }
    }

    /// (b, h) pairs per chunk below which attention runs inline: ~32 K multiply-adds.
    static func attentionPairGrain(_ g: AttentionGeometry) -> Int {
        max(1, 32_768 / max(1, g.tokens * g.tokens * g.headDim))
    }

    public func attentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                                  logSumExp: Tensor, heads: Int) throws {
        let g = try checkAttentionBackward(qkvGradient: qkvGradient, outputGradient: outputGradient, qkv: qkv,
                                           output: output, logSumExp: logSumExp, heads: heads)
        guard g.batch > 0, g.tokens > 0 else { return }
        let (n, c, d, ld) = (g.tokens, g.width, g.headDim, Int32(g.qkvWidth))
        let scale = 1 / Float(d).squareRoot()
        let source = pointer(qkv), gradient = pointer(qkvGradient), lse = pointer(logSumExp)
        let dOutput = pointer(outputGradient), out = pointer(output)
        gradient.update(repeating: 0, count: qkvGradient.count)
        // P (N x N), then dP turned into dS in place (N x N), then Δ (N), per chunk of (b, h)
        // pairs; each pair writes only its own heads' slices of qkvGradient.
        HostParallel.withSingleThreadedBLAS {
        HostParallel.forEachChunk(count: g.batch * heads, minimumChunk: Self.attentionPairGrain(g)) { pairs in
            var scratch = [Float](repeating: 0, count: 2 * n * n + n)
            scratch.withUnsafeMutableBufferPointer { buffer in
                let p = buffer.baseAddress!, ds = p + n * n, delta = ds + n * n
                for pair in pairs {
                    let (b, h) = pair.quotientAndRemainder(dividingBy: heads)
                    let q = source + b * n * g.qkvWidth + h * d, k = q + c, v = q + 2 * c
                    let dq = gradient + b * n * g.qkvWidth + h * d, dk = dq + c, dv = dq + 2 * c
                    let dO = dOutput + b * n * c + h * d, o = out + b * n * c + h * d
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(d), scale,
                                q, ld, k, ld, 0, p, Int32(n))
                    for i in 0..<n {
                        let rowLSE = lse[(b * heads + h) * n + i], row = p + i * n
                        for j in 0..<n { row[j] = Float.exp(row[j] - rowLSE) }
                        var sum: Float = 0
                        for e in 0..<d { sum += dO[i * c + e] * o[i * c + e] }
                        delta[i] = sum
                    }
                    // dV = Pᵀ·dO;  dP = dO·Vᵀ;  dS = P ∘ (dP − Δ);  dQ = scale·dS·K;  dK = scale·dSᵀ·Q.
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(d), Int32(n), 1,
                                p, Int32(n), dO, Int32(c), 0, dv, ld)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(d), 1,
                                dO, Int32(c), v, ld, 0, ds, Int32(n))
                    for i in 0..<n {
                        for j in 0..<n { ds[i * n + j] = p[i * n + j] * (ds[i * n + j] - delta[i]) }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(n), scale,
                                ds, Int32(n), k, ld, 0, dq, ld)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(d), Int32(n), scale,
                                ds, Int32(n), q, ld, 0, dk, ld)
                }
            }
        }
        }
    }

    /// Replaces one row of scores by its softmax and returns its log-sum-exp (one log per row:
    /// PyTorch's stable softmax, max subtracted first).
    static func softmaxInPlace(_ row: UnsafeMutablePointer<Float>, count: Int) -> Float {
        var maximum = -Float.infinity
        for j in 0..<count { maximum = max(maximum, row[j]) }
        var sum: Float = 0
        for j in 0..<count {
            row[j] = Float.exp(row[j] - maximum)
            sum += row[j]
        }
        let inverse = 1 / sum
        for j in 0..<count { row[j] *= inverse }
        return maximum + Float.log(sum)
    }
}
