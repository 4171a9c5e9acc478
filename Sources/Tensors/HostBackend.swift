import COpenBLAS
import Foundation

/// The host backend: OpenBLAS for GEMMs and Swift loops for everything else.
///
/// It is both a device users can train on (`--device host`) and the reference that every OpenCL
/// kernel is tested against. The loops run in ``HostParallel`` chunks with fixed reduction orders
/// (bit-identical from run to run), and each is checked against the generic `*Reference` math
/// evaluated in Double (Tests/KernelsTests/HostFastPathTests.swift); GELU uses the same erfc fit
/// as the OpenCL kernel on CPU-class devices.
public final class HostBackend: Backend {
    public let name = "host"
    public let pool: BufferPool

    public init() {
        pool = BufferPool(
            allocate: { bytes in
                var raw: UnsafeMutableRawPointer?
                // 64-byte alignment: one cache line, and what AVX-512 loads like.
                guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
                    throw BackendError.invalidArgument(operation: "host allocation",
                                                       reason: "out of memory allocating \(bytes) bytes")
                }
                return OpaquePointer(raw)
            },
            free: { Foundation.free(UnsafeMutableRawPointer($0)) }
        )
    }

    /// A short description for `mocov3-cl devices`: the BLAS core and thread count in use.
    public var summary: String {
        "OpenBLAS \(OpenBLASCore.detectedCore) core, \(openblas_get_num_threads()) threads"
    }

    /// The tensor's elements as a host pointer (valid while the tensor is alive).
    public func pointer(_ tensor: Tensor) -> UnsafeMutablePointer<Float> {
        precondition(owns(tensor) && tensor.dtype == .float32, "tensor is not a float32 host tensor")
        return UnsafeMutableRawPointer(tensor.storage.handle).assumingMemoryBound(to: Float.self) + tensor.offset
    }

    /// The tensor's bytes as a host pointer (valid while the tensor is alive).
    func rawPointer(_ tensor: Tensor) -> UnsafeMutableRawPointer {
        precondition(owns(tensor), "tensor is not a host tensor")
        return UnsafeMutableRawPointer(tensor.storage.handle) + tensor.offset * tensor.dtype.byteSize
    }

    public func upload(bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws {
        try checkTransfer("upload", tensor, byteCount: bytes.count)
        guard let base = bytes.baseAddress else { return }
        rawPointer(tensor).copyMemory(from: base, byteCount: bytes.count)
    }

    public func download(_ tensor: Tensor, intoBytes destination: UnsafeMutableRawBufferPointer) throws {
        try checkTransfer("download", tensor, byteCount: destination.count)
        guard let base = destination.baseAddress else { return }
        base.copyMemory(from: rawPointer(tensor), byteCount: destination.count)
    }

    public func synchronize() throws {}

    // MARK: Ops

    public func fill(_ tensor: Tensor, value: Float) throws {
        try checkOperands("fill", tensor)
        UnsafeMutableBufferPointer(start: pointer(tensor), count: tensor.count).update(repeating: value)
    }

    public func axpy(alpha: Float, x: Tensor, y: Tensor) throws {
        try checkOperands("axpy", x, y)
        guard x.count == y.count else {
            throw BackendError.invalidArgument(operation: "axpy", reason: "x has \(x.count) elements, y has \(y.count)")
        }
        let xs = pointer(x), ys = pointer(y)
        for i in 0..<x.count { ys[i] += alpha * xs[i] }
    }

    public func gemm(_ shape: GEMMShape, alpha: Float, a: Tensor, b: Tensor, beta: Float, c: Tensor) throws {
        try checkOperands("gemm", a, b, c)
        try shape.validate(a: a, b: b, c: c)
        guard shape.m > 0, shape.n > 0 else { return }
        let pa = pointer(a), pb = pointer(b), pc = pointer(c)
        var blasBeta = beta
        if beta == 0 {
            // BLAS leaves C unread when beta is 0, but OpenBLAS multiplies it anyway on some
            // paths; clearing first keeps a NaN already in C out of the result. OpenBLAS is then
            // told beta = 1, where the batches' C blocks do not overlap: its own pass over C
            // (zeroing it again) is skipped, and 0 + alpha·AB is alpha·AB, the same bits.
            if shape.batch == 1 || shape.strideC >= (shape.m - 1) * shape.ldc + shape.n { blasBeta = 1 }
            for batch in 0..<shape.batch {
                for row in 0..<shape.m {
                    (pc + batch * shape.strideC + row * shape.ldc).update(repeating: 0, count: shape.n)
                }
            }
        }
        if shape.k == 0 {
            if beta != 0 && beta != 1 { scaleC(shape, beta: beta, c: pc) }
            return
        }
        for batch in 0..<shape.batch {
            cblas_sgemm(CblasRowMajor,
                        shape.transposeA ? CblasTrans : CblasNoTrans,
                        shape.transposeB ? CblasTrans : CblasNoTrans,
                        Int32(shape.m), Int32(shape.n), Int32(shape.k), alpha,
                        pa + batch * shape.strideA, Int32(shape.lda),
                        pb + batch * shape.strideB, Int32(shape.ldb), blasBeta,
                        pc + batch * shape.strideC, Int32(shape.ldc))
        }
    }

    private func scaleC(_ shape: GEMMShape, beta: Float, c: UnsafeMutablePointer<Float>) {
        for batch in 0..<shape.batch {
            for row in 0..<shape.m {
                let line = c + batch * shape.strideC + row * shape.ldc
                for column in 0..<shape.n { line[column] *= beta }
            }
        }
    }
}
