/// Reference math for kernels/cl/reduce.cl.
extension HostBackend {
    public func squaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws {
        try checkSquaredNorms(output: output, input: input, segments: segments)
        let x = pointer(input), y = pointer(output)
        for (index, segment) in segments.segments.enumerated() {
            var sum = 0.0
            for i in segment.offset..<(segment.offset + segment.count) { sum += Double(x[i]) * Double(x[i]) }
            y[index] = Float(sum)
        }
    }
}
