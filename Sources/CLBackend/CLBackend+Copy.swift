import COpenCL
import Tensors

extension CLBackend {
    /// Enqueues `clEnqueueCopyBuffer` of `source`'s elements into `destination` (same count and
    /// dtype). Not a protocol op (the model never copies whole tensors): the benchmarks' device
    /// bandwidth ceiling, the rate the driver's own copy reaches.
    public func copy(from source: Tensor, to destination: Tensor) throws {
        guard owns(source), owns(destination) else { throw BackendError.foreignTensor(operation: "copy", backend: name) }
        guard source.count == destination.count, source.dtype == destination.dtype else {
            throw BackendError.invalidArgument(operation: "copy", reason:
                "\(source.count) \(source.dtype) elements into \(destination.count) \(destination.dtype) ones")
        }
        let size = source.dtype.byteSize
        try check(clEnqueueCopyBuffer(queue, memory(source), memory(destination), source.offset * size,
                                      destination.offset * size, source.count * size, 0, nil, nil), "clEnqueueCopyBuffer")
    }
}
