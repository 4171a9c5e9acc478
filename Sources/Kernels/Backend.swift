/// A compute device behind one protocol: the model is written against this and never names a
/// backend. Two implementations exist: ``HostBackend`` (OpenBLAS + Swift loops; also the
/// reference every OpenCL kernel is tested against) and `CLBackend` (OpenCL + CLBlast).
///
/// Conventions every op follows:
/// - Tensors are row-major `float32` views; an op given a tensor of another dtype, or a tensor
///   from another backend, throws (``BackendError``). Nothing is copied between backends silently.
/// - Ops are queued in order; results are visible to the host after ``synchronize()`` or a
///   ``download(_:into:)``.
/// - Outputs are fully overwritten unless a `beta`/accumulate argument says otherwise, so
///   a NaN left in an output buffer never leaks into a result.
public protocol Backend: AnyObject {
    /// Stable device name, as `mocov3-cl devices` prints it: `host`, `cpu0`, `gpu0`, ….
    var name: String { get }
    /// The allocator every tensor of this backend comes from.
    var pool: BufferPool { get }

    /// Copies `values` into `tensor` (its `count` elements).
    func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor) throws
    /// Waits for queued work, then copies `tensor`'s elements into `destination`.
    func download(_ tensor: Tensor, into destination: UnsafeMutableBufferPointer<Float>) throws
    /// Returns when every queued op has finished.
    func synchronize() throws

    // MARK: Op set

    /// `tensor[i] = value`.
    func fill(_ tensor: Tensor, value: Float) throws
    /// `y[i] += alpha · x[i]` (BLAS axpy); `x` and `y` have the same count.
    func axpy(alpha: Float, x: Tensor, y: Tensor) throws
    /// `C = alpha · op(A) · op(B) + beta · C`, row-major, optionally strided-batched
    /// (see ``GEMMShape``). With `beta == 0`, C is not read.
    func gemm(_ shape: GEMMShape, alpha: Float, a: Tensor, b: Tensor, beta: Float, c: Tensor) throws
}

public enum BackendError: Error, CustomStringConvertible {
    /// The op or dtype is not implemented on this backend.
    case unsupported(operation: String, backend: String, reason: String)
    /// A tensor that belongs to another backend was passed to an op.
    case foreignTensor(operation: String, backend: String)
    /// Sizes, leading dimensions or strides that do not fit the tensors given.
    case invalidArgument(operation: String, reason: String)

    public var description: String {
        switch self {
        case .unsupported(let operation, let backend, let reason):
            return "\(operation) is not supported on device '\(backend)': \(reason)"
        case .foreignTensor(let operation, let backend):
            return "\(operation) on device '\(backend)' was given a tensor that lives on another device; "
                + "move it explicitly (download, then upload) — backends never copy silently"
        case .invalidArgument(let operation, let reason):
            return "\(operation): \(reason)"
        }
    }
}

extension Backend {
    /// A new tensor from the pool. Its contents are undefined until written.
    public func makeTensor(shape: [Int], dtype: DType = .float32) throws -> Tensor {
        let storage = try pool.storage(byteCount: max(shape.reduce(1, *), 1) * dtype.byteSize)
        return Tensor(storage: storage, shape: shape, dtype: dtype)
    }

    /// A new tensor holding `values`.
    public func makeTensor(_ values: [Float], shape: [Int]) throws -> Tensor {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        let tensor = try makeTensor(shape: shape)
        try upload(values, to: tensor)
        return tensor
    }

    public func upload(_ values: [Float], to tensor: Tensor) throws {
        precondition(values.count == tensor.count, "\(values.count) values for a tensor of \(tensor.count)")
        try values.withUnsafeBufferPointer { try upload($0, to: tensor) }
    }

    /// The tensor's elements, after every queued op has finished.
    public func download(_ tensor: Tensor) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            try download(tensor, into: buffer)
            initialized = tensor.count
        }
    }

    /// Whether `tensor` was allocated by this backend.
    public func owns(_ tensor: Tensor) -> Bool { tensor.storage.pool === pool }

    /// Throws unless every tensor is a float32 tensor of this backend; the common entry check of ops.
    public func checkOperands(_ operation: String, _ tensors: Tensor...) throws {
        for tensor in tensors {
            guard owns(tensor) else { throw BackendError.foreignTensor(operation: operation, backend: name) }
            guard tensor.dtype == .float32 else {
                throw BackendError.unsupported(operation: operation, backend: name,
                                               reason: "only float32 is implemented, got \(tensor.dtype)")
            }
        }
    }
}
