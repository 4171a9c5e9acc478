import Tensors
import Testing

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

/// An op output: its shape and starting contents (NaN unless the op reads it: in-place and
/// accumulating ops). Every output carries a canary tail that must survive.
public struct OpOutput {
    public let shape: [Int]
    public let initial: [Float]?

    public init(shape: [Int], initial: [Float]? = nil) {
        self.shape = shape
        self.initial = initial
    }
}

/// Runs one op on a device backend and on the host with identical inputs, NaN-poisoned outputs
/// and canary tails, then compares every output elementwise (`|a − r| ≤ atol + rtol·|r|`,
/// worst element reported). Returns the host outputs for further checks.
@discardableResult
public func compareWithHost(_ device: any Backend, inputs: [OpInput], outputs: [OpOutput],
                            relative: Double = 1e-4, absolute: Double = 1e-5,
                            _ context: @autoclosure () -> String,
                            sourceLocation: SourceLocation = #_sourceLocation,
                            _ operation: (any Backend, [Tensor], [Tensor]) throws -> Void) throws -> [[Float]] {
    let host = HostBackend()
    func run(on backend: any Backend) throws -> [[Float]] {
        let inputTensors = try inputs.map { try $0.upload(to: backend) }
        let poisoned = try outputs.map {
            try PoisonedOutput(on: backend, count: $0.shape.reduce(1, *), initial: $0.initial)
        }
        try operation(backend, inputTensors, zip(poisoned, outputs).map { $0.tensor.reshaped($1.shape) })
        return try poisoned.map { try $0.values(from: backend, sourceLocation: sourceLocation) }
    }
    let expected = try run(on: host)
    let actual = try run(on: device)
    for (index, (a, e)) in zip(actual, expected).enumerated() {
        expectClose(a, e, relative: relative, absolute: absolute, "\(context()) output \(index)",
                    sourceLocation: sourceLocation)
    }
    return expected
}
