import Tensors

// Launchers for kernels/cl/elementwise.cl. Host reference: HostBackend+Elementwise.swift.
extension CLBackend {
    /// Elements per work-item of elementwise.cl's point-wise kernels (its SPAN, passed as a build
    /// option): consecutive runs on CPU-class devices, one on GPUs.
    var pointwiseSpan: Int { kernelVariant == .cpu ? 16384 : 1 }

    /// Adjacent columns per work-item of the CPU-class column reductions (sum_rows here, the
    /// LayerNorm parameter stage, BatchNorm): one float16, a cache line, in the kernels.
    static let cpuColumnBlock = 16

    /// elementwise.cl's build options: the variant and the span.
    var elementwiseOptions: String { kernelVariant.buildOption + " -DSPAN=\(pointwiseSpan)" }

    /// Runs a point-wise kernel of elementwise.cl over `count` elements, `pointwiseSpan` per
    /// work-item (GELU: at least its `vector` of 8). On CPU-class devices each work-item is its own
    /// work-group: PoCL runs a work-group on one thread, so groups of 64 spans would leave cores idle.
    func launchSpanned(_ name: String, count: Int, vector: Int = 1, _ arguments: [KernelArgument]) throws {
        let perItem = max(pointwiseSpan, vector)
        try launch(kernel(name, family: "elementwise", options: elementwiseOptions), label: name,
                   global: [(count + perItem - 1) / perItem],
                   local: [kernelVariant == .cpu ? 1 : Self.vectorLocalSize], arguments)
    }

    /// add_bias and scale_rows: whole rows per work-item on CPU-class devices (about a span of
    /// elements), else a work-item per element over (columns, rows).
    func launchRows(_ name: String, rows: Int, columns: Int, _ arguments: [KernelArgument]) throws {
        let rowsPerItem = kernelVariant == .cpu ? max(1, pointwiseSpan / max(columns, 1)) : 1
        let global = kernelVariant == .cpu ? [(rows + rowsPerItem - 1) / rowsPerItem] : [columns, rows]
        try launch(kernel(name, family: "elementwise", options: elementwiseOptions), label: name, global: global,
                   local: kernelVariant == .cpu ? [1] : nil,
                   arguments + [.int(Int32(rows)), .int(Int32(columns)), .int(Int32(rowsPerItem))])
    }

    public func gelu(output: Tensor, input: Tensor) throws {
        try checkOperands("gelu", output, input)
        try checkSameCount("gelu", output, input)
        let n = try int32Count(input.count, "gelu")
        try launchSpanned("gelu_forward", count: input.count, vector: 8, [.operand(output), .operand(input), .int(n)])
    }

    public func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws {
        try checkOperands("geluBackward", inputGradient, outputGradient, input)
        try checkSameCount("geluBackward", inputGradient, outputGradient, input)
        let n = try int32Count(input.count, "geluBackward")
        try launchSpanned("gelu_backward", count: input.count, vector: 8,
                            [.operand(inputGradient), .operand(outputGradient), .operand(input), .int(n)])
    }

    public func relu(output: Tensor, input: Tensor) throws {
        try checkOperands("relu", output, input)
        try checkSameCount("relu", output, input)
        let n = try int32Count(input.count, "relu")
        try launchSpanned("relu", count: input.count, [.operand(output), .operand(input), .int(n)])
    }

    public func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws {
        try checkOperands("reluBackward", inputGradient, outputGradient, output)
        try checkSameCount("reluBackward", inputGradient, outputGradient, output)
        let n = try int32Count(output.count, "reluBackward")
        try launchSpanned("relu_backward", count: output.count,
                            [.operand(inputGradient), .operand(outputGradient), .operand(output), .int(n)])
    }

    public func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws {
        try checkOperands("add", output, a, b)
        try checkSameCount("add", output, a, b)
        let n = try int32Count(output.count, "add")
        try launchSpanned("add", count: output.count, [.operand(output), .operand(a), .operand(b), .int(n)])
    }

    public func scale(_ x: Tensor, by factor: Float) throws {
        try checkOperands("scale", x)
        let n = try int32Count(x.count, "scale")
        try launchSpanned("scale", count: x.count, [.operand(x), .int(n), .float(factor)])
    }

    public func addBias(_ x: Tensor, bias: Tensor) throws {
        try checkOperands("addBias", x, bias)
        let (rows, columns) = try checkRowVector("addBias", matrix: x, vector: bias)
        _ = try int32Count(x.count, "addBias")
        guard rows > 0, columns > 0 else { return }
        try launchRows("add_bias", rows: rows, columns: columns, [.operand(x), .operand(bias)])
    }

    public func scaleRows(output: Tensor, input: Tensor, factors: Tensor) throws {
        let (rows, columns) = try checkScaleRows(output: output, input: input, factors: factors)
        _ = try int32Count(input.count, "scaleRows")
        guard rows > 0, columns > 0 else { return }
        try launchRows("scale_rows", rows: rows, columns: columns, [.operand(output), .operand(input), .operand(factors)])
    }

    /// Rows summed per work-item in the first pass of sumRows (SUM_ROWS_CHUNK in the kernel).
    static let sumRowsChunk = 256

    public func sumRows(output: Tensor, input: Tensor) throws {
        try checkOperands("sumRows", output, input)
        let (rows, columns) = try checkRowVector("sumRows", matrix: input, vector: output)
        _ = try int32Count(input.count, "sumRows")
        guard rows > 0, columns > 0 else { return }
        let chunks = (rows + Self.sumRowsChunk - 1) / Self.sumRowsChunk
        let partial = try makeTensor(shape: [chunks, columns])
        let options = elementwiseOptions
        let block = Self.cpuColumnBlock
        try launch(kernel("sum_rows_partial", family: "elementwise", options: options), label: "sum_rows_partial",
                   global: [kernelVariant == .cpu ? (columns + block - 1) / block : columns, chunks],
                   [.buffer(partial)] + [.operand(input), .int(Int32(rows)), .int(Int32(columns))])
        try launch(kernel("sum_rows_finish", family: "elementwise", options: options), label: "sum_rows_finish",
                   global: [columns], [.operand(output), .buffer(partial), .int(Int32(chunks)), .int(Int32(columns))])
    }
}
