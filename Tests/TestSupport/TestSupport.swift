import CLBackend
import Tensors
import Testing

/// Checks `|a − r| ≤ atol + rtol·|r|` elementwise and records one failure naming the worst
/// element (or the first NaN) at the caller's location.
public func expectClose(_ actual: [Float], _ expected: [Float], relative: Double = 1e-4, absolute: Double = 1e-5,
                        _ context: @autoclosure () -> String = "",
                        sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.count == expected.count else {
        Issue.record("\(context()): got \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    let result = worstError(actual, expected, relative: relative, absolute: absolute)
    if !result.passed {
        Issue.record("\(context()): \(result) [rtol \(relative), atol \(absolute)]", sourceLocation: sourceLocation)
    }
}

/// Runs `body` and records a failure unless it throws an error whose text contains every fragment.
public func expectError(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch {
        let text = "\(error)"
        for fragment in fragments where !text.contains(fragment) {
            Issue.record("error «\(text)» does not mention «\(fragment)»", sourceLocation: sourceLocation)
        }
    }
}

/// An output tensor poisoned with NaN and followed by a canary tail (``PoisonedBuffer``), so a
/// kernel that skips an element (NaN survives) or writes past the end (canary changes) is caught.
public struct PoisonedOutput {
    let buffer: PoisonedBuffer
    public var whole: Tensor { buffer.whole }
    /// The `count` elements the op under test writes.
    public var tensor: Tensor { buffer.tensor }

    /// `dtype` `.int32` poisons with ``PoisonedBuffer/poisonIndex`` (index outputs; read them with
    /// ``int32Values(from:sourceLocation:)``).
    public init(on backend: any Backend, count: Int, initial: [Float]? = nil, dtype: DType = .float32) throws {
        buffer = try PoisonedBuffer(on: backend, count: count, initial: initial, dtype: dtype)
    }

    /// Downloads the output and records a failure if the canary tail changed.
    public func values(from backend: any Backend, sourceLocation: SourceLocation = #_sourceLocation) throws -> [Float] {
        let (values, damaged) = try buffer.read(from: backend)
        if let damaged {
            Issue.record("canary overwritten at element \(damaged.index) (got \(damaged.value))", sourceLocation: sourceLocation)
        }
        return values
    }

    /// An int32 output's elements; records a failure if the canary tail changed.
    public func int32Values(from backend: any Backend, sourceLocation: SourceLocation = #_sourceLocation) throws -> [Int32] {
        let (values, damaged) = try buffer.readInt32(from: backend)
        if let damaged {
            Issue.record("canary overwritten at element \(damaged.index) (got \(damaged.value))", sourceLocation: sourceLocation)
        }
        return values
    }
}

/// The OpenCL devices the tests run on: the first CPU-class device (PoCL in CI).
public enum TestDevices {
    public static let openCLDevice: CLDevice? = (try? CLDevice.all())?.first { $0.deviceClass == .cpu }
        ?? (try? CLDevice.all())?.first

    /// Whether OpenCL tests can run; when false they are skipped with `skipReason`.
    public static var hasOpenCL: Bool { openCLDevice != nil }
    public static let skipReason: Comment = "no OpenCL device found (install pocl-opencl-icd); OpenCL tests skipped"

    /// A fresh backend on the test device (no on-disk binary cache unless given one).
    public static func backend(provider: GEMMProvider = .kernel, cache: KernelBinaryCache? = nil) throws -> CLBackend {
        guard let device = openCLDevice else { throw SelectionError(message: "no OpenCL device") }
        return try CLBackend(device: device, gemmProvider: provider, binaryCache: cache)
    }
}

/// C = alpha·op(A)·op(B) + beta·C computed naively in Double: the independent reference for the
/// host GEMM (which is itself the reference for OpenCL).
public func referenceGEMM(_ shape: GEMMShape, alpha: Float, a: [Float], b: [Float], beta: Float, c: [Float],
                          offsets: (a: Int, b: Int, c: Int) = (0, 0, 0)) -> [Float] {
    var result = c
    for batch in 0..<shape.batch {
        for i in 0..<shape.m {
            for j in 0..<shape.n {
                var sum = 0.0
                for p in 0..<shape.k {
                    let aIndex = offsets.a + batch * shape.strideA + (shape.transposeA ? p * shape.lda + i : i * shape.lda + p)
                    let bIndex = offsets.b + batch * shape.strideB + (shape.transposeB ? j * shape.ldb + p : p * shape.ldb + j)
                    sum += Double(a[aIndex]) * Double(b[bIndex])
                }
                let index = offsets.c + batch * shape.strideC + i * shape.ldc + j
                let previous = beta == 0 ? 0 : Double(beta) * Double(c[index])
                result[index] = Float(Double(alpha) * sum + previous)
            }
        }
    }
    return result
}

/// Absolute tolerance for a float32 GEMM with inputs in [-1, 1]: rounding in a K-term sum grows
/// about linearly in K in the worst case, so the bound scales with K (2e-7·K + 1e-5).
public func gemmAbsoluteTolerance(k: Int) -> Double { 2e-7 * Double(k) + 1e-5 }
