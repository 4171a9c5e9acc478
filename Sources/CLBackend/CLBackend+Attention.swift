import Tensors

/// Which form of kernels/cl/attention.cl runs (its build option `CPU_CLASS`).
///
/// The backend's ``CLBackend/kernelVariant`` picks it (CPU-class: `rows`, GPU-class: `tiled`); the
/// explicit-variant overloads of
/// ``CLBackend/attentionForward(output:logSumExp:qkv:heads:variant:)`` exist so that both forms are
/// tested on whatever device the tests have (PoCL in CI), and for benchmarks.
public enum AttentionVariant: String, CaseIterable, Sendable {
    /// One work-item per row streaming the other rows from global memory; no local memory, no
    /// barriers (they cost ~4x on PoCL). CPU-class devices.
    case rows
    /// Work-groups of rows sharing tiles of the other rows staged in local memory. GPUs.
    case tiled

    public init(_ kernelVariant: CLBackend.KernelVariant) {
        self = kernelVariant == .gpu ? .tiled : .rows
    }

    /// Work-items per work-group: 8 on CPU-class devices wastes few rows past N (N = 65 runs 72
    /// work-items, or 40 of two rows each in the forward at D <= 32); 64 queries per group on GPUs
    /// share each staged K/V tile.
    var localSize: Int { self == .rows ? 8 : 64 }
    /// Rows per inner step (attention.cl TILE): see the kernel's header.
    var tile: Int { self == .rows ? 8 : 32 }

    /// Query rows per work-item of the forward (attention.cl QUERY_ROWS): 2 on CPU-class devices
    /// when D is 8, 16, 24 or 32, so that two rows of float8 vectors share each K and V row loaded
    /// and still fit AVX2's 16 registers with little spilling (PoCL, D = 32: 1.15-1.2x); 1 otherwise.
    func queryRows(headDim: Int) -> Int { self == .rows && headDim % 8 == 0 && headDim <= 32 ? 2 : 1 }

    func buildOptions(headDim: Int) -> String {
        "-DHEAD_DIM=\(headDim) -DCPU_CLASS=\(self == .rows ? 1 : 0) -DTILE=\(tile) -DQUERY_ROWS=\(queryRows(headDim: headDim))"
    }
}

// Launchers for kernels/cl/attention.cl. Host reference: HostBackend+Attention.swift.
extension CLBackend {
    /// Head dims above this would not fit the kernels' per-row private arrays (four D-vectors in
    /// attention_backward_key) in registers on any device we target.
    static let attentionMaxHeadDim = 256

    public func attentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor, heads: Int) throws {
        try attentionForward(output: output, logSumExp: logSumExp, qkv: qkv, heads: heads,
                             variant: AttentionVariant(kernelVariant))
    }

    /// ``attentionForward(output:logSumExp:qkv:heads:)`` with the kernel variant forced.
    public func attentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor, heads: Int,
                                 variant: AttentionVariant) throws {
        let g = try checkAttentionForward(output: output, logSumExp: logSumExp, qkv: qkv, heads: heads)
        let options = try attentionOptions(g, variant: variant, operation: "attentionForward")
        guard g.batch > 0, g.tokens > 0 else { return }
        let rows = variant.queryRows(headDim: g.headDim)
        try launch(kernel("attention_forward", family: "attention", options: options), label: "attention_forward",
                   global: [(g.tokens + rows - 1) / rows, g.heads, g.batch], local: [variant.localSize, 1, 1],
                   [.operand(output), .operand(logSumExp),
                    .operand(qkv)] + attentionSizes(g, scaled: true))
    }

    public func attentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                                  logSumExp: Tensor, heads: Int) throws {
        try attentionBackward(qkvGradient: qkvGradient, outputGradient: outputGradient, qkv: qkv, output: output,
                              logSumExp: logSumExp, heads: heads, variant: AttentionVariant(kernelVariant))
    }

    /// ``attentionBackward(qkvGradient:outputGradient:qkv:output:logSumExp:heads:)`` with the
    /// kernel variant forced.
    public func attentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                                  logSumExp: Tensor, heads: Int, variant: AttentionVariant) throws {
        let g = try checkAttentionBackward(qkvGradient: qkvGradient, outputGradient: outputGradient, qkv: qkv,
                                           output: output, logSumExp: logSumExp, heads: heads)
        let options = try attentionOptions(g, variant: variant, operation: "attentionBackward")
        guard g.batch > 0, g.tokens > 0 else { return }

        // Δ_i = dO_i·O_i, read by both passes; pooled, so steady-state training allocates nothing.
        let delta = try makeTensor(shape: g.statisticShape)
        try launch(kernel("attention_backward_delta", family: "attention", options: options),
                   label: "attention_backward_delta", global: [g.tokens, g.heads, g.batch],
                   [.operand(delta), .buffer(outputGradient),
                    .long(Int64(outputGradient.offset)), .operand(output)]
                    + attentionSizes(g, scaled: false))
        // Both passes write disjoint parts of qkvGradient (dQ; dK and dV), so no atomics.
        let inputs: [KernelArgument] = [
            .operand(qkvGradient),
            .operand(outputGradient), .operand(qkv),
            .operand(logSumExp), .operand(delta),
        ] + attentionSizes(g, scaled: true)
        for name in ["attention_backward_query", "attention_backward_key"] {
            try launch(kernel(name, family: "attention", options: options), label: name,
                       global: [g.tokens, g.heads, g.batch], local: [variant.localSize, 1, 1], inputs)
        }
    }

    /// The build options for this geometry; refuses what the kernels cannot hold.
    func attentionOptions(_ g: AttentionGeometry, variant: AttentionVariant, operation: String) throws -> String {
        guard g.headDim <= Self.attentionMaxHeadDim else {
            throw BackendError.unsupported(operation: operation, backend: name, reason:
                "head dimension \(g.headDim) exceeds \(Self.attentionMaxHeadDim), the most attention.cl keeps in registers")
        }
        _ = try int32Count(g.batch * g.tokens * g.qkvWidth, operation)
        if variant == .tiled {
            // attention_backward_key's tiles: Q and dO rows plus lse and Δ.
            let localBytes = (2 * variant.tile * g.headDim + 2 * variant.tile) * 4
            guard localBytes <= device.localMemoryBytes, variant.localSize <= device.maxWorkGroupSize else {
                throw BackendError.unsupported(operation: operation, backend: name, reason:
                    "the tiled attention kernels need \(localBytes) bytes of local memory and work-groups of "
                    + "\(variant.localSize); the device has \(device.localMemoryBytes) and \(device.maxWorkGroupSize)")
            }
        }
        return variant.buildOptions(headDim: g.headDim)
    }

    /// The trailing (n, heads, width[, scale]) arguments every attention kernel takes.
    func attentionSizes(_ g: AttentionGeometry, scaled: Bool) -> [KernelArgument] {
        let sizes: [KernelArgument] = [.int(Int32(g.tokens)), .int(Int32(g.heads)), .int(Int32(g.width))]
        return scaled ? sizes + [.float(1 / Float(g.headDim).squareRoot())] : sizes
    }
}
