/// Element types a tensor can hold. Ops compute in `float32`; `int32`/`int64` hold indices (class
/// labels, offset tables); `float16` is reserved so that storage, views and the pool need no change when mixed
/// precision arrives.
public enum DType: String, Sendable {
    case float32
    case float16
    case int32
    /// Element offsets in index tables (segment chunk tables).
    case int64

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float32, .int32: return 4
        case .float16: return 2
        case .int64: return 8
        }
    }
}

/// One device allocation, handed out by a backend's ``BufferPool`` and returned to it when the
/// last tensor viewing it goes away.
///
/// `handle` is backend-specific: a host pointer for the host backend, a `cl_mem` for OpenCL.
/// Only the backend that made it interprets it (``Backend/owns(_:)``).
public final class Storage {
    public let handle: OpaquePointer
    /// Bytes the caller asked for; the allocation behind it may be larger (pool bucket).
    public let byteCount: Int
    let bucketBytes: Int
    let pool: BufferPool

    init(handle: OpaquePointer, byteCount: Int, bucketBytes: Int, pool: BufferPool) {
        self.handle = handle
        self.byteCount = byteCount
        self.bucketBytes = bucketBytes
        self.pool = pool
    }

    deinit { pool.recycle(handle, bucketBytes: bucketBytes) }
}

/// A strided-free view into a ``Storage``: an element offset, a row-major shape and a dtype.
///
/// Views are cheap values; ops receive them and address `storage` from `offset` on. Shapes use
/// the project's fixed dimension letters: B (batch), N (tokens), C (width), H (heads), D (head dim).
public struct Tensor {
    public let storage: Storage
    /// Offset of the first element, in elements of `dtype`.
    public let offset: Int
    public let shape: [Int]
    public let dtype: DType

    public init(storage: Storage, offset: Int = 0, shape: [Int], dtype: DType = .float32) {
        precondition(offset >= 0 && shape.allSatisfy { $0 >= 0 }, "negative offset or dimension")
        precondition((offset + shape.reduce(1, *)) * dtype.byteSize <= storage.byteCount,
                     "tensor of shape \(shape) at offset \(offset) exceeds its storage (\(storage.byteCount) bytes)")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.dtype = dtype
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Elements the storage holds past `offset`: how far an op with leading dimensions may reach.
    public var capacity: Int { storage.byteCount / dtype.byteSize - offset }

    /// A view of `shape` starting `offset` elements into this one.
    public func view(offset: Int = 0, shape: [Int]) -> Tensor {
        precondition(offset + shape.reduce(1, *) <= capacity, "view of shape \(shape) at +\(offset) is outside its tensor")
        return Tensor(storage: storage, offset: self.offset + offset, shape: shape, dtype: dtype)
    }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ shape: [Int]) -> Tensor {
        precondition(shape.reduce(1, *) == count, "cannot reshape \(self.shape) to \(shape)")
        return Tensor(storage: storage, offset: offset, shape: shape, dtype: dtype)
    }
}
