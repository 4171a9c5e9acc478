import Tensors

// Launchers for kernels/cl/elementwise.cl. Host reference: HostBackend+Elementwise.swift.
extension CLBackend {
    /// Elements per work-item of elementwise.cl's point-wise kernels (its SPAN): consecutive runs
    /// on CPU-class devices, one on GPUs.
    var pointwiseSpan: Int { kernelVariant == .cpu ? 16384 : 1 }

    /// Work-items for `count` elements taken `vector` at a time, `pointwiseSpan` vectors each.
    func pointwiseItems(_ count: Int, vector: Int = 1) -> Int {
        let vectors = (count + vector - 1) / vector
        return (vectors + pointwiseSpan - 1) / pointwiseSpan
    }

    /// add_bias and scale_rows: whole rows per work-item on CPU-class devices (about a span of
    /// elements), else a work-item per element over (columns, rows).
    func launchRows(_ name: String, rows: Int, columns: Int, _ arguments: [KernelArgument]) throws {
        let rowsPerItem = kernelVariant == .cpu ? max(1, pointwiseSpan / max(columns, 1)) : 1
        let global = kernelVariant == .cpu ? [(rows + rowsPerItem - 1) / rowsPerItem] : [columns, rows]
        try launch(kernel(name, family: "elementwise", options: kernelVariant.buildOption), label: name, global: global,
                   arguments + [.int(Int32(rows)), .int(Int32(columns)), .int(Int32(rowsPerItem))])
    }

    /// One work-item per element over `count` elements of a family built with the variant option.
    func launchPointwise(_ name: String, family: String = "elementwise", count: Int,
                         _ arguments: [KernelArgument]) throws {
        try launch(kernel(name, family: family, options: kernelVariant.buildOption), label: name, global: [count],
                   local: [Self.vectorLocalSize], arguments)
    }

    public func gelu(output: Tensor, input: Tensor) throws {
        try checkOperands("gelu", output, input)
        try checkSameCount("gelu", output, input)
        let n = try int32Count(input.count, "gelu")
        try launchPointwise("gelu_forward", count: pointwiseItems(input.count, vector: 8), [.operand(output), .operand(input), .int(n)])
    }

    public func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws {
        try checkOperands("geluBackward", inputGradient, outputGradient, input)
        try checkSameCount("geluBackward", inputGradient, outputGradient, input)
        let n = try int32Count(input.count, "geluBackward")
        try launchPointwise("gelu_backward", count: pointwiseItems(input.count, vector: 8),
                            [.operand(inputGradient), .operand(outputGradient), .operand(input), .int(n)])
    }

    public func relu(output: Tensor, input: Tensor) throws {
        try checkOperands("relu", output, input)
        try checkSameCount("relu", output, input)
        let n = try int32Count(input.count, "relu")
        try launchPointwise("relu", count: pointwiseItems(input.count), [.operand(output), .operand(input), .int(n)])
    }

    public func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws {
        try checkOperands("reluBackward", inputGradient, outputGradient, output)
        try checkSameCount("reluBackward", inputGradient, outputGradient, output)
        let n = try int32Count(output.count, "reluBackward")
        try launchPointwise("relu_backward", count: pointwiseItems(output.count),
                            [.operand(inputGradient), .operand(outputGradient), .operand(output), .int(n)])
    }

    public func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws {
        try checkOperands("add", output, a, b)
        try checkSameCount("add", output, a, b)
        let n = try int32Count(output.count, "add")
        try launchPointwise("add", count: pointwiseItems(output.count), [.operand(output), .operand(a), .operand(b), .int(n)])
    }

    public func scale(_ x: Tensor, by factor: Float) throws {
        try checkOperands("scale", x)
        let n = try int32Count(x.count, "scale")
        try launchPointwise("scale", count: pointwiseItems(x.count), [.operand(x), .int(n), .float(factor)])
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
        let options = kernelVariant.buildOption
        try launch(kernel("sum_rows_partial", family: "elementwise", options: options), label: "sum_rows_partial",
                   global: [columns, chunks],
                   [.buffer(partial)] + [.operand(input), .int(Int32(rows)), .int(Int32(columns))])
        try launch(kernel("sum_rows_finish", family: "elementwise", options: options), label: "sum_rows_finish",
                   global: [columns], [.operand(output), .buffer(partial), .int(Int32(chunks)), .int(Int32(columns))])
    }
}
