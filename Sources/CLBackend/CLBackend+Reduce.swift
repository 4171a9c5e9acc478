import Tensors

/// A segment table's chunk table on the device (see kernels/cl/reduce.cl): every segment split
/// into chunks of at most ``CLBackend/segmentChunk`` elements.
struct DeviceSegmentTable {
    let table: SegmentTable
    let chunks: Int
    let chunkSegment: Tensor       // int32 (chunks)
    let chunkBegin: Tensor         // int64 (chunks)
    let chunkCount: Tensor         // int32 (chunks)
    let segmentFirstChunk: Tensor  // int32 (segments)
    let segmentChunks: Tensor      // int32 (segments)
    let segmentAdapted: Tensor     // int32 (segments)
}

// Launchers for kernels/cl/reduce.cl. Host reference: HostBackend+Reduce.swift.
extension CLBackend {
    /// Elements per chunk: one work-item sums one chunk.
    static let segmentChunk = 4096

    /// The device chunk table of `table`, built and uploaded on first use.
    func deviceSegments(_ table: SegmentTable) throws -> DeviceSegmentTable {
        if let cached = segmentTables[ObjectIdentifier(table)] { return cached }
        var chunkSegment: [Int32] = [], chunkBegin: [Int64] = [], chunkCount: [Int32] = []
        var firstChunk: [Int32] = [], chunkTotals: [Int32] = []
        for (index, segment) in table.segments.enumerated() {
            firstChunk.append(Int32(chunkSegment.count))
            var begin = segment.offset
            let end = segment.offset + segment.count
            while begin < end {
                let count = min(Self.segmentChunk, end - begin)
                chunkSegment.append(Int32(index))
                chunkBegin.append(Int64(begin))
                chunkCount.append(Int32(count))
                begin += count
            }
            chunkTotals.append(Int32(chunkSegment.count) - firstChunk.last!)
        }
        let chunks = chunkSegment.count
        let padded = max(chunks, 1)
        let entry = DeviceSegmentTable(
            table: table, chunks: chunks,
            chunkSegment: try makeTensor(chunkSegment + [0], shape: [chunks + 1]).view(shape: [padded]),
            chunkBegin: try makeTensor(chunkBegin + [0], shape: [chunks + 1]).view(shape: [padded]),
            chunkCount: try makeTensor(chunkCount + [0], shape: [chunks + 1]).view(shape: [padded]),
            segmentFirstChunk: try makeTensor(firstChunk + [0], shape: [table.count + 1]),
            segmentChunks: try makeTensor(chunkTotals + [0], shape: [table.count + 1]),
            segmentAdapted: try makeTensor(table.segments.map { Int32($0.adapted ? 1 : 0) } + [0],
                                                                                               shape: [table.count + 1]))
        segmentTables[ObjectIdentifier(table)] = entry
        return entry
    }

    public func squaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws {
        try checkSquaredNorms(output: output, input: input, segments: segments)
        guard segments.count > 0 else { return }
        let table = try deviceSegments(segments)
        let partial = try makeTensor(shape: [max(table.chunks, 1)])
        if table.chunks > 0 {
            try launch(kernel("squared_norms_partial", family: "reduce"), label: "squared_norms_partial",
                       global: [table.chunks],
                       [.buffer(partial)] + [.operand(input), .buffer(table.chunkBegin), .buffer(table.chunkCount),
                        .int(Int32(table.chunks))])
        }
        try launch(kernel("squared_norms_finish", family: "reduce"), label: "squared_norms_finish",
                   global: [segments.count],
                   [.operand(output), .buffer(partial), .buffer(table.segmentFirstChunk), .buffer(table.segmentChunks),
                                      .int(Int32(segments.count))])
    }
}
