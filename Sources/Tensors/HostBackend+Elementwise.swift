import CHostKernels
import Foundation
import RealModule

/// Reference math for kernels/cl/elementwise.cl, generic so finite-difference tests run it in
/// Double and the host backend runs it in Float.
public enum ElementwiseReference {
    /// Exact GELU, `x·Φ(x)` with `Φ(x) = ½(1 + erf(x/√2))` (PyTorch `nn.GELU()`, SPEC A.2).
    @inlinable
    public static func gelu<T: Real>(_ x: T) -> T { x * cumulativeNormal(x) }

    /// `GELU'(x) = Φ(x) + x·φ(x)`.
    @inlinable
    public static func geluDerivative<T: Real>(_ x: T) -> T {
        let density = T.exp(-x * x / 2) / T.sqrt(2 * T.pi)
        return cumulativeNormal(x) + x * density
    }

    @inlinable
    static func cumulativeNormal<T: Real>(_ x: T) -> T { (1 + T.erf(x / T.sqrt(2))) / 2 }
}

/// GELU in Float for the host backend: Φ through the erfc Chebyshev fit that
/// kernels/cl/elementwise.cl uses on CPU-class devices (Numerical Recipes §6.2 `erfcc`,
/// fractional error < 1.2e-7 for every z ≥ 0). libm's `erff` cost ~50 ns an element here and was
/// ~14 % of a host training step; the fit costs one exponential and a degree-9 polynomial, and
/// with ``exponential(_:)`` the whole loop is branch-free float code that vectorizes.
///
/// `Φ(x) = erfc(−x/√2)/2` is taken from the tail, `tail = erfc(|x|/√2)/2`, as `tail` for x < 0
/// and `1 − tail` for x ≥ 0, so deep negative inputs keep their relative accuracy (no `1 − erf`
/// cancellation). ``ElementwiseReference`` stays the exact, generic form for the Double tests.
/// The host backend runs the same arithmetic from CHostKernels (built for AVX-512, AVX2 and the
/// baseline, picked at run time); this Swift form is its reference, bit for bit.
public enum FastGELU {
    /// The instruction set the host's GELU loops run with: "avx512f", "avx2" or "baseline".
    public static var instructionSet: String { String(cString: mocov3_host_kernels_isa()) }

    /// Runs the host's GELU loops with `isa` ("avx512f", "avx2", "baseline"; nil: the widest this
    /// CPU has); false when the CPU lacks it. For tests: every variant gives the same bits.
    @discardableResult
    public static func useInstructionSet(_ isa: String?) -> Bool {
        guard let isa else { return mocov3_host_kernels_use(nil) == 1 }
        return isa.withCString { mocov3_host_kernels_use($0) } == 1
    }

    /// `erfc(z)` for `z ≥ 0`: `t·exp(−z² + P(t))`, `t = 1/(1 + z/2)` (Numerical Recipes eq. 6.2.20's fit).
    @inline(__always)
    static func erfcNonnegative(_ z: Float) -> Float {
        let t: Float = 1 / (1 + 0.5 * z)
        var p: Float = 0.17087277
        p = p * t - 0.82215223
        p = p * t + 1.48851587
        p = p * t - 1.13520398
        p = p * t + 0.27886807
        p = p * t - 0.18628806
        p = p * t + 0.09678418
        p = p * t + 0.37409196
        p = p * t + 1.00002368
        p = p * t - 1.26551223
        return t * exponential(-z * z + p)
    }

    /// `exp(a)` for `a ≤ 88`, ~1 ulp, in plain float arithmetic and bit operations so that a loop
    /// of GELUs vectorizes (libm's `expf` is a call per element, and was half of GELU's time).
    /// Cephes `expf`: `a = k·ln2 + r`, `|r| ≤ ln2/2` (ln2 split in two for an exact `k·C1`),
    /// `exp(r)` by its degree-7 minimax polynomial, `2^k` built in the exponent bits. `k` is
    /// rounded with the 1.5·2²³ shifter instead of a conversion (whose range check would not
    /// vectorize). Below −87 (where `2^k` would leave the normal range) it returns 0: GELU's
    /// terms there are < 1e-37 in absolute value.
    @inline(__always)
    static func exponential(_ a: Float) -> Float {
        let shifter: Float = 12_582_912                        // 1.5·2²³
        let clamped = min(max(a, -87), 88)
        let shifted = clamped * 1.44269504088896341 + shifter  // k + shifter, k = round(a/ln2)
        let k = shifted - shifter
        let r = (clamped - k * 0.693359375) + k * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let e = p * (r * r) + r + 1
        let scale = Float(bitPattern: (shifted.bitPattern &- shifter.bitPattern &+ 127) &<< 23)
        return a < -87 ? 0 : e * scale
    }

    /// `Φ(x)`, the standard normal CDF.
    @inline(__always)
    static func cumulativeNormal(_ x: Float) -> Float {
        let tail = 0.5 * erfcNonnegative(abs(x) * 0.70710678118654752)
        return x < 0 ? tail : 1 - tail
    }

    /// `GELU(x) = x·Φ(x)`.
    @inline(__always)
    public static func gelu(_ x: Float) -> Float { x * cumulativeNormal(x) }

    /// `GELU'(x) = Φ(x) + x·φ(x)`, `φ(x) = exp(−x²/2)/√(2π)`.
    @inline(__always)
    public static func geluDerivative(_ x: Float) -> Float {
        cumulativeNormal(x) + x * 0.39894228040143268 * exponential(-0.5 * x * x)
    }
}

// Streaming ops run in ``HostParallel`` chunks of at least `elementwiseGrain` elements; each
// chunk writes only its own elements, so results do not depend on the split.
extension HostBackend {
    public func gelu(output: Tensor, input: Tensor) throws {
        try checkOperands("gelu", output, input)
        try checkSameCount("gelu", output, input)
        let x = pointer(input), y = pointer(output)
        // FastGELU's arithmetic in CHostKernels, built for this CPU's widest vectors (same bits).
        HostParallel.forEachChunk(count: input.count, minimumChunk: HostParallel.elementwiseGrain / 4) { range in
            mocov3_gelu_forward(y + range.lowerBound, x + range.lowerBound, range.count)
        }
    }

    public func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws {
        try checkOperands("geluBackward", inputGradient, outputGradient, input)
        try checkSameCount("geluBackward", inputGradient, outputGradient, input)
        let x = pointer(input), dy = pointer(outputGradient), dx = pointer(inputGradient)
        HostParallel.forEachChunk(count: input.count, minimumChunk: HostParallel.elementwiseGrain / 4) { range in
            mocov3_gelu_backward(dx + range.lowerBound, dy + range.lowerBound, x + range.lowerBound, range.count)
        }
    }

    public func relu(output: Tensor, input: Tensor) throws {
        try checkOperands("relu", output, input)
        try checkSameCount("relu", output, input)
        let x = pointer(input), y = pointer(output)
        HostParallel.forEachChunk(count: input.count, minimumChunk: HostParallel.elementwiseGrain) { range in
            for i in range { y[i] = max(x[i], 0) }
        }
    }

    public func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws {
        try checkOperands("reluBackward", inputGradient, outputGradient, output)
        try checkSameCount("reluBackward", inputGradient, outputGradient, output)
        let y = pointer(output), dy = pointer(outputGradient), dx = pointer(inputGradient)
        HostParallel.forEachChunk(count: output.count, minimumChunk: HostParallel.elementwiseGrain) { range in
            for i in range { dx[i] = y[i] > 0 ? dy[i] : 0 }
        }
    }

    public func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws {
        try checkOperands("add", output, a, b)
        try checkSameCount("add", output, a, b)
        let x = pointer(a), y = pointer(b), z = pointer(output)
        HostParallel.forEachChunk(count: output.count, minimumChunk: HostParallel.elementwiseGrain) { range in
            for i in range { z[i] = x[i] + y[i] }
        }
    }

    public func scale(_ x: Tensor, by factor: Float) throws {
        try checkOperands("scale", x)
        let values = pointer(x)
        HostParallel.forEachChunk(count: x.count, minimumChunk: HostParallel.elementwiseGrain) { range in
            for i in range { values[i] *= factor }
        }
    }

    public func scaleRows(output: Tensor, input: Tensor, factors: Tensor) throws {
        let (rows, columns) = try checkScaleRows(output: output, input: input, factors: factors)
        let x = pointer(input), y = pointer(output), f = pointer(factors)
        let minimumRows = max(1, HostParallel.elementwiseGrain / max(1, columns))
        HostParallel.forEachChunk(count: rows, minimumChunk: minimumRows) { range in
            for r in range {
                let factor = f[r]
                for i in (r * columns)..<((r + 1) * columns) { y[i] = factor * x[i] }
            }
        }
    }

    public func addBias(_ x: Tensor, bias: Tensor) throws {
        try checkOperands("addBias", x, bias)
        let (rows, columns) = try checkRowVector("addBias", matrix: x, vector: bias)
        let values = pointer(x), b = pointer(bias)
        let minimumRows = max(1, HostParallel.elementwiseGrain / max(1, columns))
        HostParallel.forEachChunk(count: rows, minimumChunk: minimumRows) { range in
            for row in range {
                let line = values + row * columns
                for column in 0..<columns { line[column] += b[column] }
            }
        }
    }

    /// `out[c] += Σ_r x[r, c]` (bias gradients), in Double over ``HostParallel/orderedBlockSums(rows:width:_:)``
    /// blocks, so the result is the same on any machine. (Splitting by columns instead ran 3× slower:
    /// each core then strides through every row.)
    public func sumRows(output: Tensor, input: Tensor) throws {
        try checkOperands("sumRows", output, input)
        let (rows, columns) = try checkRowVector("sumRows", matrix: input, vector: output)
        let x = pointer(input), y = pointer(output)
        let sums = HostParallel.orderedBlockSums(rows: rows, width: columns) { range, partial in
            Self.accumulateRows(partial, x + range.lowerBound * columns, rows: range.count, columns: columns)
        }
        for column in 0..<columns { y[column] += Float(sums[column]) }
    }

    /// `sums[c] += Σ_r Double(x[r·columns + c])`, rows in order; not inlined, so the loop over c
    /// vectorizes on its own plain pointers.
    @inline(never)
    static func accumulateRows(_ sums: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Float>, rows: Int,
                               columns: Int) {
        for row in 0..<rows {
            let line = x + row * columns
            for column in 0..<columns { sums[column] += Double(line[column]) }
        }
    }
}
