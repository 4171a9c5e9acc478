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

extension HostBackend {
    public func gelu(output: Tensor, input: Tensor) throws {
        try checkOperands("gelu", output, input)
        try checkSameCount("gelu", output, input)
        let x = pointer(input), y = pointer(output)
        for i in 0..<input.count { y[i] = ElementwiseReference.gelu(x[i]) }
    }

    public func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws {
        try checkOperands("geluBackward", inputGradient, outputGradient, input)
        try checkSameCount("geluBackward", inputGradient, outputGradient, input)
        let x = pointer(input), dy = pointer(outputGradient), dx = pointer(inputGradient)
        for i in 0..<input.count { dx[i] = dy[i] * ElementwiseReference.geluDerivative(x[i]) }
    }

    public func relu(output: Tensor, input: Tensor) throws {
        try checkOperands("relu", output, input)
        try checkSameCount("relu", output, input)
        let x = pointer(input), y = pointer(output)
        for i in 0..<input.count { y[i] = max(x[i], 0) }
    }

    public func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws {
        try checkOperands("reluBackward", inputGradient, outputGradient, output)
        try checkSameCount("reluBackward", inputGradient, outputGradient, output)
        let y = pointer(output), dy = pointer(outputGradient), dx = pointer(inputGradient)
        for i in 0..<output.count { dx[i] = y[i] > 0 ? dy[i] : 0 }
    }

    public func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws {
        try checkOperands("add", output, a, b)
        try checkSameCount("add", output, a, b)
        let x = pointer(a), y = pointer(b), z = pointer(output)
        for i in 0..<output.count { z[i] = x[i] + y[i] }
    }

    public func scale(_ x: Tensor, by factor: Float) throws {
        try checkOperands("scale", x)
        let values = pointer(x)
        for i in 0..<x.count { values[i] *= factor }
    }

    public func addBias(_ x: Tensor, bias: Tensor) throws {
        try checkOperands("addBias", x, bias)
        let (rows, columns) = try checkRowVector("addBias", matrix: x, vector: bias)
        let values = pointer(x), b = pointer(bias)
        for row in 0..<rows {
            let line = values + row * columns
            for column in 0..<columns { line[column] += b[column] }
        }
    }

    public func sumRows(output: Tensor, input: Tensor) throws {
        try checkOperands("sumRows", output, input)
        let (rows, columns) = try checkRowVector("sumRows", matrix: input, vector: output)
        let x = pointer(input), y = pointer(output)
        var sums = [Double](repeating: 0, count: columns)
        for row in 0..<rows {
            let line = x + row * columns
            for column in 0..<columns { sums[column] += Double(line[column]) }
        }
        for column in 0..<columns { y[column] += Float(sums[column]) }
    }
}
