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
/// - Backward ops overwrite input gradients and **accumulate** (`+=`) parameter gradients (weight,
///   bias, γ, β), as PyTorch's autograd does: a layer used twice in one step (the heads run once
///   per view) sums its contributions, and the step zeroes the flat gradient buffer once.
/// - Dimension letters: B (batch), N (tokens), C (width), H (heads), D (head dim), P (patch);
///   R is "rows" for ops that treat any leading dimensions as one.
/// - An op a backend does not implement throws ``BackendError/unsupported(operation:backend:reason:)``
///   (the defaults in `UnsupportedOps.swift`); nothing falls back to another device.
public protocol Backend: AnyObject {
    /// Stable device name, as `mocov3-cl devices` prints it: `host`, `cpu0`, `gpu0`, ….
    var name: String { get }
    /// The allocator every tensor of this backend comes from.
    var pool: BufferPool { get }

    /// Copies `tensor.count × dtype.byteSize` bytes into `tensor`.
    func upload(bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws
    /// Waits for queued work, then copies `tensor`'s bytes into `destination`.
    func download(_ tensor: Tensor, intoBytes destination: UnsafeMutableRawBufferPointer) throws
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

    // MARK: Element-wise (kernels/cl/elementwise.cl)

    /// `output = GELU(input)` with the exact erf form `x·½·(1 + erf(x/√2))` (PyTorch `nn.GELU()`).
    func gelu(output: Tensor, input: Tensor) throws
    /// `inputGradient = outputGradient · GELU'(input)`.
    func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws
    /// `output = max(input, 0)`; `output` may be `input`.
    func relu(output: Tensor, input: Tensor) throws
    /// `inputGradient = outputGradient · [output > 0]`; may overwrite `outputGradient`.
    func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws
    /// `output = a + b` (residual connections); `output` may alias `a` or `b`.
    func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws
    /// `x = factor · x`.
    func scale(_ x: Tensor, by factor: Float) throws
    /// `output[r, c] = factors[r] · input[r, c]` for input (R, C), factors (R); `output` may be
    /// `input`. Drop path (stochastic depth): a per-sample keep mask scaled by 1/keep, forward and backward.
    func scaleRows(output: Tensor, input: Tensor, factors: Tensor) throws
    /// `x[r, c] += bias[c]` for x (R, C), bias (C).
    func addBias(_ x: Tensor, bias: Tensor) throws
    /// `output[c] += Σ_r input[r, c]` for input (R, C), output (C): bias gradients.
    func sumRows(output: Tensor, input: Tensor) throws

    // MARK: Reductions (kernels/cl/reduce.cl)

    /// `output[s] = Σ input[i]²` over each segment `s` of a flat buffer (output has one element
    /// per segment): gradient norms for the monitor and LARS.
    func squaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws

    // MARK: Optimizers and momentum encoder (kernels/cl/optimizer.cl)

    /// One AdamW step over the segments of flat buffers, exactly as `torch.optim.AdamW`
    /// (decoupled decay `p -= lr·wd·p`, then the Adam update with bias corrections).
    func adamw(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
               segments: SegmentTable, step: AdamWStep) throws
    /// One LARS step (SPEC A.6): for adapted segments `g += wd·p`, `g *= η‖p‖/‖g‖` (1 if either
    /// norm is 0); then `μ = m·μ + g`, `p -= lr·μ` for every segment.
    func lars(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
              step: LARSStep) throws
    /// One step of `torch.optim.SGD` with momentum (no dampening, no Nesterov) over the segments:
    /// `g += wd·p` (coupled decay, every segment), `b = momentum·b + g`, `p -= lr·b`. A zeroed
    /// buffer gives torch's first step (`b = g`). Overwrites `gradients` with `g + wd·p`.
    func sgd(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
             step: SGDStep) throws
    /// One LAMB step (You et al. 2020, Algorithm 2): the Adam moments with bias corrections,
    /// `u = m̂/(√v̂ + ε)`, plus `wd·p` for adapted segments; then per segment
    /// `p -= lr·(‖p‖/‖u‖)·u` for adapted segments (ratio 1 if either norm is 0) and `p -= lr·u`
    /// for the others (1-D tensors, as LARS). Overwrites `gradients` with `u`.
    func lamb(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
              segments: SegmentTable, step: LAMBStep) throws
    /// The momentum-encoder update `target = m·target + (1 − m)·source` over whole buffers.
    func momentumUpdate(target: Tensor, source: Tensor, momentum: Float) throws

    // MARK: Normalization (kernels/cl/layernorm.cl, kernels/cl/batchnorm.cl)

    /// LayerNorm over the last dimension of input (R, C): saves per-row `mean` and
    /// `reciprocalStd` = 1/√(var + ε) (biased variance) for the backward.
    func layerNormForward(output: Tensor, mean: Tensor, reciprocalStd: Tensor, input: Tensor, weight: Tensor,
                          bias: Tensor, epsilon: Float) throws
    /// Overwrites `inputGradient`; accumulates `weightGradient` and `biasGradient`.
    func layerNormBackward(inputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor,
                           outputGradient: Tensor, input: Tensor, mean: Tensor, reciprocalStd: Tensor,
                           weight: Tensor) throws
    /// BatchNorm1d on input (R, C) (`torch.nn.BatchNorm1d`). Training: normalizes with the batch
    /// statistics (biased variance), saves them, and updates the running statistics with
    /// `momentum` (running variance uses the unbiased variance). Evaluation: uses the running
    /// statistics and saves them. `weight`/`bias` nil means affine-free.
    func batchNormForward(output: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor, input: Tensor,
                          weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVariance: Tensor,
                          momentum: Float, epsilon: Float, training: Bool) throws
    /// Backward of training-mode BatchNorm1d. Overwrites `inputGradient`; accumulates the
    /// affine gradients when given.
    func batchNormBackward(inputGradient: Tensor, weightGradient: Tensor?, biasGradient: Tensor?,
                           outputGradient: Tensor, input: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor,
                           weight: Tensor?) throws

    // MARK: Loss pieces (kernels/cl/softmax.cl, kernels/cl/l2norm.cl)

    /// Fused softmax cross-entropy on logits (R, M) with int32 `labels` (R):
    /// `losses[r] = scale · (logsumexp(logits[r]) − logits[r, label])` and
    /// `logitsGradient[r] = scale · (softmax(logits[r]) − onehot(label))`. MoCo passes
    /// `scale = 2τ/R` (SPEC A.4); labels are `arange(R) + offset` in the distributed case.
    func softmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, labels: Tensor,
                             scale: Float) throws
    /// Soft-target cross-entropy on logits (R, M) with float `targets` (R, M) (mixup, cutmix,
    /// label smoothing; timm's `SoftTargetCrossEntropy`): `losses[r] = scale·Σ_j t[r,j]·(lse_r − z[r,j])`
    /// and `logitsGradient[r, j] = scale·(T_r·softmax(z[r])_j − t[r,j])` with `T_r = Σ_j t[r,j]`.
    func softTargetCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, targets: Tensor,
                                scale: Float) throws
    /// `output[r] = input[r] / max(‖input[r]‖, 1e-12)` for input (R, C) (`F.normalize`); saves
    /// `norms[r] = ‖input[r]‖`.
    func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws
    /// `inputGradient = (outputGradient − output·⟨output, outputGradient⟩) / max(norm, 1e-12)`
    /// (rows with norm ≤ 1e-12: `outputGradient / 1e-12`).
    func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor, norms: Tensor) throws

    // MARK: kNN classifier (kernels/cl/knn.cl)

    /// Merges one tile of similarities (R, M) into a running top-k per row: `values` (R, k)
    /// float32 and `indices` (R, k) int32 hold each row's k largest (similarity, bank column)
    /// pairs as a binary min-heap (slot 0 the smallest kept), a free slot being (−∞, −1); start
    /// them so with ``knnTopKReset(values:indices:)``. Column `j` of the tile is bank column
    /// `columnOffset + j`; columns whose `bankLabels` entry is negative (unfilled bank slots) are
    /// skipped. A value replaces the heap's minimum only when strictly larger, and columns are
    /// visited in order with the same sift-down on every backend, so the kept pairs (ties
    /// included) are identical across backends; which of several equal minimums is evicted
    /// depends on heap position, not on column order.
    func knnTopK(values: Tensor, indices: Tensor, similarities: Tensor, bankLabels: Tensor,
                 columnOffset: Int) throws
    /// Sets `values` to −∞ and `indices` to −1 (empty heaps).
    func knnTopKReset(values: Tensor, indices: Tensor) throws
    /// The weighted vote of InstDisc over each row's heap: class c scores Σ exp(s/T) over the
    /// kept pairs whose bank label is c (summed in heap-slot order, in double where the device
    /// has it); `predictions[r]` (int32) is the class with the largest score, the smallest class
    /// index among equal scores, or −1 when the row kept nothing.
    func knnVote(predictions: Tensor, values: Tensor, indices: Tensor, bankLabels: Tensor, classes: Int,
                 temperature: Float) throws

    // MARK: Transformer pieces (kernels/cl/patch_embed.cl, kernels/cl/attention.cl)

    /// Patch projection: images (B, 3, H, W) → tokens (B, N, C) written at token rows
    /// `firstToken ..< firstToken + (H/P)·(W/P)` (row-major patch order, `t = row·(W/P) + col`),
    /// i.e. Conv2d(3, C, P, stride P) + flatten + transpose, with weight (C, 3·P·P) and bias (C).
    func patchEmbedForward(output: Tensor, images: Tensor, weight: Tensor, bias: Tensor, patchSize: Int,
                           firstToken: Int) throws
    /// Accumulates the patch projection's weight and bias gradients from `outputGradient`
    /// (B, N, C) at the same token rows.
    func patchEmbedBackward(weightGradient: Tensor, biasGradient: Tensor, outputGradient: Tensor, images: Tensor,
                            patchSize: Int, firstToken: Int) throws
    /// Fused multi-head attention: `softmax(Q·Kᵀ/√D)·V` per head, reading Q, K, V from the fused
    /// buffer qkv (B, N, 3C) in the reference's `[Q; K; V]`, head-major layout and writing heads
    /// concatenated into output (B, N, C). Saves the row log-sum-exp, logSumExp (B, H, N).
    func attentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor, heads: Int) throws
    /// Overwrites qkvGradient (B, N, 3C) with dQ, dK, dV, recomputing the attention weights from
    /// qkv and logSumExp.
    func attentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                           logSumExp: Tensor, heads: Int) throws
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
        precondition(tensor.dtype == .float32, "uploading Float values into a \(tensor.dtype) tensor")
        try values.withUnsafeBytes { try upload(bytes: $0, to: tensor) }
    }

    public func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor) throws {
        precondition(values.count == tensor.count && tensor.dtype == .float32, "upload does not match the tensor")
        try upload(bytes: UnsafeRawBufferPointer(values), to: tensor)
    }

    /// A new int32 tensor holding `values` (class labels).
    public func makeTensor(_ values: [Int32], shape: [Int]) throws -> Tensor {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        let tensor = try makeTensor(shape: shape, dtype: .int32)
        try values.withUnsafeBytes { try upload(bytes: $0, to: tensor) }
        return tensor
    }

    /// A new int64 tensor holding `values` (offset tables).
    public func makeTensor(_ values: [Int64], shape: [Int]) throws -> Tensor {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        let tensor = try makeTensor(shape: shape, dtype: .int64)
        try values.withUnsafeBytes { try upload(bytes: $0, to: tensor) }
        return tensor
    }

    /// The tensor's elements, after every queued op has finished.
    public func download(_ tensor: Tensor) throws -> [Float] {
        precondition(tensor.dtype == .float32, "downloading a \(tensor.dtype) tensor as Float")
        return try [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            try download(tensor, intoBytes: UnsafeMutableRawBufferPointer(buffer))
            initialized = tensor.count
        }
    }

    public func download(_ tensor: Tensor, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try download(tensor, intoBytes: UnsafeMutableRawBufferPointer(destination))
    }

    /// The entry check of upload/download: a tensor of this backend whose byte size matches.
    public func checkTransfer(_ operation: String, _ tensor: Tensor, byteCount: Int) throws {
        guard owns(tensor) else { throw BackendError.foreignTensor(operation: operation, backend: name) }
        guard byteCount == tensor.count * tensor.dtype.byteSize else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "\(byteCount) bytes for a \(tensor.dtype) tensor of \(tensor.count) elements")
        }
    }

    /// Throws unless every tensor has the same element count.
    public func checkSameCount(_ operation: String, _ tensors: Tensor...) throws {
        let counts = tensors.map(\.count)
        guard Set(counts).count <= 1 else {
            throw BackendError.invalidArgument(operation: operation, reason: "element counts differ: \(counts)")
        }
    }

    /// Rows and columns of a tensor seen as (R, C): C is the last dimension, R the rest.
    public func rowsAndColumns(_ tensor: Tensor) -> (rows: Int, columns: Int) {
        let columns = tensor.shape.last ?? 1
        return (columns == 0 ? 0 : tensor.count / columns, columns)
    }

    /// Whether `tensor` was allocated by this backend.
    public func owns(_ tensor: Tensor) -> Bool { tensor.storage.pool === pool }

    /// Throws unless every tensor is a float32 tensor of this backend; the common entry check of ops.
    public func checkOperands(_ operation: String, _ tensors: Tensor...) throws {
        try checkOperands(operation, tensors)
    }

    public func checkOperands(_ operation: String, _ tensors: [Tensor], dtype: DType = .float32) throws {
        for tensor in tensors {
            guard owns(tensor) else { throw BackendError.foreignTensor(operation: operation, backend: name) }
            guard tensor.dtype == dtype else {
                throw BackendError.unsupported(operation: operation, backend: name,
                                               reason: "expected \(dtype) tensors, got \(tensor.dtype)")
            }
        }
    }
}
