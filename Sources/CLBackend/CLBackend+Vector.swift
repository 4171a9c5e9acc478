import Tensors

// Launchers for kernels/cl/vector.cl. Host reference: HostBackend.fill / .axpy.
extension CLBackend {
    static let vectorLocalSize = 64

    public func fill(_ tensor: Tensor, value: Float) throws {
        try checkOperands("fill", tensor)
        let count = try int32Count(tensor.count, "fill")
        try launch(kernel("fill", family: "vector"), label: "fill", global: [tensor.count],
                                                                             local: [Self.vectorLocalSize],
                   [.operand(tensor), .int(count), .float(value)])
    }

    public func axpy(alpha: Float, x: Tensor, y: Tensor) throws {
        try checkOperands("axpy", x, y)
        guard x.count == y.count else {
            throw BackendError.invalidArgument(operation: "axpy", reason: "x has \(x.count) elements, y has \(y.count)")
        }
        let count = try int32Count(x.count, "axpy")
        try launch(kernel("axpy", family: "vector"), label: "axpy", global: [x.count], local: [Self.vectorLocalSize],
                   [.operand(y), .operand(x), .int(count), .float(alpha)])
    }

    /// Kernels index elements with 32-bit ints; larger tensors are refused rather than wrapped.
    func int32Count(_ count: Int, _ operation: String) throws -> Int32 {
        guard count <= Int(Int32.max) else {
            throw BackendError.unsupported(operation: operation, backend: name,
                                           reason: "\(count) elements exceed the kernels' 32-bit index range")
        }
        return Int32(count)
    }
}
