import Foundation
import Tensors

/// An op input: seeded values with a shape.
public enum OpInput {
    case float([Float], shape: [Int])
    case int32([Int32], shape: [Int])

    func upload(to backend: any Backend) throws -> Tensor {
        switch self {
        case .float(let values, let shape): return try backend.makeTensor(values, shape: shape)
        case .int32(let values, let shape): return try backend.makeTensor(values, shape: shape)
        }
    }
}

/// An op output: its shape, dtype and starting contents (poison unless the op reads it: in-place
/// and accumulating ops). Every output carries a canary tail that must survive.
public struct OpOutput {
    public let shape: [Int]
    public let initial: [Float]?
    /// `.float32`, or `.int32` for index outputs (kNN heaps and predictions), compared exactly.
    public let dtype: DType

    public init(shape: [Int], initial: [Float]? = nil, dtype: DType = .float32) {
        precondition(dtype == .float32 || dtype == .int32, "op outputs are float32 or int32")
        precondition(initial == nil || initial!.count == shape.reduce(1, *), "initial contents do not fit \(shape)")
        self.shape = shape
        self.initial = initial
        self.dtype = dtype
    }
}

/// An output buffer poisoned before the op (NaN for floats, `poisonIndex` for int32) and followed
/// by a canary tail, so an op that skips an element (the poison survives) or writes past the end
/// (the canary changes) is caught.
public struct PoisonedBuffer {
    public static let canaryCount = 64
    public static let canaryValue: Float = 1234.5
    public static let canaryIndex: Int32 = 0x5A5A_5A5A
    /// What an int32 output holds before the op: no valid index, distinct from −1 (an empty slot).
    public static let poisonIndex: Int32 = -0x3C3C_3C3C

    public let whole: Tensor
    /// The `count` elements the op under test writes.
    public let tensor: Tensor

    public init(on backend: any Backend, count: Int, initial: [Float]? = nil, dtype: DType = .float32) throws {
        whole = try backend.makeTensor(shape: [count + Self.canaryCount], dtype: dtype)
        tensor = whole.view(shape: [count])
        switch dtype {
        case .int32:
            let body = initial.map { $0.map { Int32($0) } } ?? [Int32](repeating: Self.poisonIndex, count: count)
            let values = body + [Int32](repeating: Self.canaryIndex, count: Self.canaryCount)
            try values.withUnsafeBytes { try backend.upload(bytes: $0, to: whole) }
        default:
            try backend.upload((initial ?? [Float](repeating: .nan, count: count))
                               + [Float](repeating: Self.canaryValue, count: Self.canaryCount), to: whole)
        }
    }

    /// The op's `count` elements (int32 ones converted to Float, exact below 2²⁴), and the first
    /// canary element that changed, if any.
    public func read(from backend: any Backend) throws -> (values: [Float], damagedCanary: (index: Int, value: Float)?) {
        if whole.dtype == .int32 {
            let (values, damaged) = try readInt32(from: backend)
            return (values.map(Float.init), damaged.map { ($0.index, Float($0.value)) })
        }
        let all = try backend.download(whole)
        let damaged = all[tensor.count...].firstIndex { $0 != Self.canaryValue }.map { (index: $0 - tensor.count, value: all[$0]) }
        return (Array(all[..<tensor.count]), damaged)
    }

    /// An int32 output's elements and the first canary element that changed, if any.
    public func readInt32(from backend: any Backend) throws -> (values: [Int32], damagedCanary: (index: Int, value: Int32)?) {
        precondition(whole.dtype == .int32, "readInt32 on a \(whole.dtype) buffer")
        var all = [Int32](repeating: 0, count: whole.count)
        try all.withUnsafeMutableBytes { try backend.download(whole, intoBytes: $0) }
        let damaged = all[tensor.count...].firstIndex { $0 != Self.canaryIndex }.map { (index: $0 - tensor.count, value: all[$0]) }
        return (Array(all[..<tensor.count]), damaged)
    }
}

/// One op run on a device and on a reference backend with identical inputs, poisoned outputs and
/// canary tails, every output compared elementwise by `|a − r| ≤ atol + rtol·|r|`
/// (ggml's test-backend-ops pattern: each backend op against the CPU backend).
public struct OpCheck {
    /// The protocol requirement it exercises, as `Backend` names it (`layerNormBackward`).
    public let operation: String
    /// What distinguishes this case: shapes and variant (`(394, 384)`, `NT (394, 1152, 384)`).
    public let label: String
    public let inputs: [OpInput]
    public let outputs: [OpOutput]
    public let relative: Double
    public let absolute: Double
    public let body: (any Backend, [Tensor], [Tensor]) throws -> Void

    public init(_ operation: String, _ label: String, inputs: [OpInput], outputs: [OpOutput],
                relative: Double = 1e-4, absolute: Double = 1e-5,
                _ body: @escaping (any Backend, [Tensor], [Tensor]) throws -> Void) {
        self.operation = operation
        self.label = label
        self.inputs = inputs
        self.outputs = outputs
        self.relative = relative
        self.absolute = absolute
        self.body = body
    }

    /// The outputs of one backend's run.
    public struct Run {
        public let values: [[Float]]
        /// Per output, the first canary element the op overwrote.
        public let damagedCanaries: [(index: Int, value: Float)?]
        public let seconds: Double
    }

    /// Runs the op on `backend` (inputs uploaded, outputs poisoned, then downloaded).
    public func run(on backend: any Backend) throws -> Run {
        let inputTensors = try inputs.map { try $0.upload(to: backend) }
        let poisoned = try outputs.map {
            try PoisonedBuffer(on: backend, count: $0.shape.reduce(1, *), initial: $0.initial, dtype: $0.dtype)
        }
        try backend.synchronize()
        let start = DispatchTime.now().uptimeNanoseconds
        try body(backend, inputTensors, zip(poisoned, outputs).map { $0.tensor.reshaped($1.shape) })
        try backend.synchronize()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let reads = try poisoned.map { try $0.read(from: backend) }
        return Run(values: reads.map(\.values), damagedCanaries: reads.map(\.damagedCanary), seconds: seconds)
    }

    /// Runs the op on both backends and compares. Errors the op throws propagate.
    public func compare(_ device: any Backend, reference: any Backend) throws -> OpCheckResult {
        let expected = try run(on: reference)
        let actual = try run(on: device)
        var problems: [String] = []
        for (index, damaged) in expected.damagedCanaries.enumerated() {
            if let damaged { problems.append("output \(index): \(reference.name) overwrote canary \(damaged.index) with \(damaged.value)") }
        }
        for (index, damaged) in actual.damagedCanaries.enumerated() {
            if let damaged { problems.append("output \(index): wrote past its end (canary \(damaged.index) became \(damaged.value))") }
        }
        let comparisons = zip(actual.values, expected.values).enumerated().map { index, pair in
            outputs[index].dtype == .int32
                ? worstError(pair.0, pair.1, relative: 0, absolute: 0)
                : worstError(pair.0, pair.1, relative: relative, absolute: absolute)
        }
        return OpCheckResult(operation: operation, label: label, comparisons: comparisons,
                             scaledError: zip(actual.values, expected.values).map { scaledError($0, $1) }.max() ?? 0,
                             problems: problems, expected: expected.values, seconds: actual.seconds)
    }
}

/// `max|a − r| / max|r|`: the error relative to the output's scale (an element-wise relative error
/// is meaningless where the reference is near an analytic zero).
public func scaledError(_ actual: [Float], _ expected: [Float]) -> Double {
    var error = 0.0, scale = 0.0
    for (a, r) in zip(actual, expected) {
        let difference = a == r ? 0 : abs(Double(a) - Double(r))
        error = difference.isNaN || error.isNaN ? .nan : max(error, difference)
        if r.isFinite { scale = max(scale, abs(Double(r))) }
    }
    return error.isNaN ? .infinity : error / max(scale, 1e-30)
}

/// The outcome of one ``OpCheck``.
public struct OpCheckResult {
    public let operation: String
    public let label: String
    /// One per output, in the check's order.
    public let comparisons: [Tensors.ComparisonResult]
    /// The largest ``scaledError(_:_:)`` over the outputs.
    public let scaledError: Double
    /// Canary damage, in words.
    public let problems: [String]
    /// The reference backend's outputs.
    public let expected: [[Float]]
    /// The device's time for the op (synchronized; includes first-use program builds).
    public let seconds: Double

    public var passed: Bool { problems.isEmpty && comparisons.allSatisfy(\.passed) }

    /// The output with the largest error/tolerance ratio.
    public var worst: (output: Int, comparison: Tensors.ComparisonResult)? {
        comparisons.enumerated().max { $0.element.ratio < $1.element.ratio }.map { ($0.offset, $0.element) }
    }
}
