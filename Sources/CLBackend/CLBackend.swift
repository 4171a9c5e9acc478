import COpenCL
import Foundation
import Tensors
import KernelSources

/// The OpenCL backend: one context and one in-order queue on one device, the program cache, the
/// buffer pool, and the launchers for `kernels/cl/*.cl` and CLBlast.
///
/// Ops are enqueued without waiting (a `clFinish` round trip costs 30–200 µs on PoCL, a queued
/// launch 3–10 µs); ``synchronize()`` and ``download(_:into:)`` wait. Because the queue is in
/// order, a pooled buffer released by one op and reused by the next is always safe.
public final class CLBackend: Backend {
    public let device: CLDevice
    public var name: String { device.name }
    public let pool: BufferPool
    /// Which GEMM implementation serves ``gemm(_:alpha:a:b:beta:c:)`` on this device.
    public let gemmProvider: GEMMProvider
    /// The register tile of the hand-written GEMM (from the device's preferred vector width, or
    /// `MOCOV3_GEMM_TILE`).
    public let gemmTile: GEMMTile
    /// K per split of the hand-written GEMM's split-K mode (512, or `MOCOV3_GEMM_KCHUNK`).
    public let gemmSplitChunk: Int
    let context: cl_context
    let queue: cl_command_queue
    let binaryCache: KernelBinaryCache?
    /// Which kernel variants are built: CPU-class (a work-item per row, no barriers) or GPU-class
    /// (work-groups with local memory). Defaults from the device class; tests set both on PoCL.
    public var kernelVariant: KernelVariant
    /// Whether launches record profiling events (see ``drainTimings()``).
    public let profiling: Bool
    /// Programs loaded from the on-disk binary cache instead of compiled (for tests and logs).
    public private(set) var binaryCacheHits = 0
    /// Device copies of segment tables' chunk tables (CLBackend+Reduce.swift), keyed by table
    /// identity; each entry keeps its table alive so the key is never reused.
    var segmentTables: [ObjectIdentifier: DeviceSegmentTable] = [:]
    private var programs: [String: cl_program] = [:]
    private var kernels: [String: cl_kernel] = [:]
    private var pendingEvents: [(String, cl_event)] = []

    /// - Parameters:
    ///   - device: the device, from ``CLDevice/all()``.
    ///   - gemmProvider: overrides ``GEMMProvider/default(for:)``.
    ///   - binaryCache: where compiled programs are kept between runs; nil disables.
    ///   - profiling: record an event per launch for benchmarks.
    public init(device: CLDevice, gemmProvider: GEMMProvider? = nil,
                binaryCache: KernelBinaryCache? = KernelBinaryCache.fromEnvironment(),
                profiling: Bool = false) throws {
        self.device = device
        self.gemmProvider = gemmProvider ?? GEMMProvider.default(for: device.deviceClass)
        self.gemmTile = try GEMMTile.fromEnvironment()
            ?? GEMMTile.default(preferredVectorWidth: device.preferredFloatVectorWidth)
        gemmSplitChunk = try GEMMTile.splitChunkFromEnvironment() ?? Self.defaultSplitChunk
        self.binaryCache = binaryCache
        self.profiling = profiling
        kernelVariant = .default(for: device.deviceClass)
        var status: cl_int = 0
        var deviceID: cl_device_id? = device.id
        guard let context = clCreateContext(nil, 1, &deviceID, nil, nil, &status), status == CL_SUCCESS else {
            throw CLError(call: "clCreateContext(\(device.name))", status: status)
        }
        self.context = context
        let properties = cl_command_queue_properties(profiling ? CL_QUEUE_PROFILING_ENABLE : 0)
        guard let queue = clCreateCommandQueue(context, device.id, properties, &status), status == CL_SUCCESS else {
            clReleaseContext(context)
            throw CLError(call: "clCreateCommandQueue(\(device.name))", status: status)
        }
        self.queue = queue
        let deviceName = device.name
        pool = BufferPool(
            allocate: { bytes in
                var status: cl_int = 0
                guard let memory = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), bytes, nil, &status),
                      status == CL_SUCCESS else {
                    throw CLError(call: "clCreateBuffer(\(bytes) bytes on \(deviceName))", status: status)
                }
                return memory
            },
            free: { clReleaseMemObject($0) }
        )
    }

    deinit {
        clFinish(queue)
        for (_, event) in pendingEvents { clReleaseEvent(event) }
        kernels.values.forEach { clReleaseKernel($0) }
        programs.values.forEach { clReleaseProgram($0) }
        pool.trim()
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    /// The kernel variant choice as a build option (`-DCPU_CLASS=1` or `0`).
    public enum KernelVariant: String, CaseIterable, Sendable {
        case cpu, gpu
        public var buildOption: String { "-DCPU_CLASS=\(self == .cpu ? 1 : 0)" }

        /// GPU-class kernels on GPUs, CPU-class on CPUs and other accelerators.
        public static func `default`(for deviceClass: CLDeviceClass) -> KernelVariant {
            deviceClass == .gpu ? .gpu : .cpu
        }
    }

    // MARK: Memory

    func memory(_ tensor: Tensor) -> cl_mem { tensor.storage.handle }

    public func upload(bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws {
        try checkTransfer("upload", tensor, byteCount: bytes.count)
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        try check(clEnqueueWriteBuffer(queue, memory(tensor), cl_bool(CL_TRUE), tensor.offset * tensor.dtype.byteSize,
                                       bytes.count, base, 0, nil, nil), "clEnqueueWriteBuffer")
    }

    public func download(_ tensor: Tensor, intoBytes destination: UnsafeMutableRawBufferPointer) throws {
        try checkTransfer("download", tensor, byteCount: destination.count)
        guard let base = destination.baseAddress, destination.count > 0 else { return }
        try check(clEnqueueReadBuffer(queue, memory(tensor), cl_bool(CL_TRUE), tensor.offset * tensor.dtype.byteSize,
                                      destination.count, base, 0, nil, nil), "clEnqueueReadBuffer")
    }

    public func synchronize() throws {
        try check(clFinish(queue), "clFinish(\(name))")
    }

    // MARK: Programs

    /// Builds (or takes from the caches) the program for one kernel family with build options.
    func program(family: String, options: String) throws -> cl_program {
        let key = family + "|" + options
        if let program = programs[key] { return program }
        let program = try buildProgram(source: try KernelSources.source(family: family), options: options,
                                       label: "\(family).cl")
        programs[key] = program
        return program
    }

    /// Compiles OpenCL C for this device, through the on-disk binary cache. A compile error throws
    /// a ``CLError`` carrying the full build log.
    public func buildProgram(source: String, options: String, label: String) throws -> cl_program {
        var deviceID: cl_device_id? = device.id
        let cacheKey = KernelBinaryCache.key(source: source, options: options, device: device)
        if let binaryCache, let binary = binaryCache.load(key: cacheKey),
           let program = programFromBinary(binary, options: options) {
            binaryCacheHits += 1
            return program
        }
        var status: cl_int = 0
        let created: cl_program? = source.withCString { text in
            var pointer: UnsafePointer<CChar>? = text
            var length = strlen(text)
            return clCreateProgramWithSource(context, 1, &pointer, &length, &status)
        }
        guard let program = created, status == CL_SUCCESS else {
            throw CLError(call: "clCreateProgramWithSource(\(label))", status: status)
        }
        status = clBuildProgram(program, 1, &deviceID, options, nil, nil)
        if status != CL_SUCCESS {
            let log = buildLog(program)
            clReleaseProgram(program)
            throw CLError(call: "clBuildProgram(\(label), options: \"\(options)\")", status: status, buildLog: log)
        }
        if let binaryCache, let binary = programBinary(program) {
            binaryCache.store(binary, key: cacheKey)
        }
        return program
    }

    private func programFromBinary(_ binary: [UInt8], options: String) -> cl_program? {
        var deviceID: cl_device_id? = device.id
        var status: cl_int = 0, binaryStatus: cl_int = 0
        let program: cl_program? = binary.withUnsafeBufferPointer { bytes in
            var pointer: UnsafePointer<UInt8>? = bytes.baseAddress
            var length = bytes.count
            return clCreateProgramWithBinary(context, 1, &deviceID, &length, &pointer, &binaryStatus, &status)
        }
        guard let program, status == CL_SUCCESS, binaryStatus == CL_SUCCESS else { return nil }
        guard clBuildProgram(program, 1, &deviceID, options, nil, nil) == CL_SUCCESS else {
            clReleaseProgram(program)
            return nil
        }
        return program
    }

    private func programBinary(_ program: cl_program) -> [UInt8]? {
        var size = 0
        guard clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size, &size, nil)
                == CL_SUCCESS, size > 0 else { return nil }
        var binary = [UInt8](repeating: 0, count: size)
        let status: cl_int = binary.withUnsafeMutableBufferPointer { bytes in
            var pointer: UnsafeMutablePointer<UInt8>? = bytes.baseAddress
            return clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARIES),
                                    MemoryLayout<UnsafeMutablePointer<UInt8>?>.size, &pointer, nil)
        }
        return status == CL_SUCCESS ? binary : nil
    }

    private func buildLog(_ program: cl_program) -> String {
        var size = 0
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
        var bytes = [CChar](repeating: 0, count: size + 1)
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil)
        return String(cString: bytes)
    }

    /// A kernel object from a family's program, created once and reused.
    func kernel(_ kernelName: String, family: String, options: String = "") throws -> cl_kernel {
        let key = family + "|" + options + "|" + kernelName
        if let kernel = kernels[key] { return kernel }
        let program = try program(family: family, options: options)
        var status: cl_int = 0
        guard let kernel = clCreateKernel(program, kernelName, &status), status == CL_SUCCESS else {
            throw CLError(call: "clCreateKernel(\(kernelName) in \(family).cl)", status: status)
        }
        kernels[key] = kernel
        return kernel
    }

    // MARK: Launching

    /// One kernel argument, in declaration order.
    enum KernelArgument {
        /// A tensor as the (buffer, element offset as `long`) pair every kernel takes: two arguments.
        case operand(Tensor)
        case buffer(Tensor)
        case memory(cl_mem)
        case int(Int32)
        case long(Int64)
        case float(Float)
    }

    /// Enqueues `kernel` over `global` work-items (rounded up to multiples of `local`). No wait.
    func launch(_ kernel: cl_kernel, label: String, global: [Int], local: [Int]? = nil,
                _ arguments: [KernelArgument]) throws {
        let expanded = arguments.flatMap { argument -> [KernelArgument] in
            guard case .operand(let tensor) = argument else { return [argument] }
            return [.buffer(tensor), .long(Int64(tensor.offset))]
        }
        for (index, argument) in expanded.enumerated() {
            let status: cl_int
            switch argument {
            case .operand:
                preconditionFailure("operands are expanded above")
            case .buffer(let tensor):
                var value: cl_mem? = memory(tensor)
                status = clSetKernelArg(kernel, cl_uint(index), MemoryLayout<cl_mem>.size, &value)
            case .memory(let memory):
                var value: cl_mem? = memory
                status = clSetKernelArg(kernel, cl_uint(index), MemoryLayout<cl_mem>.size, &value)
            case .int(var value):
                status = clSetKernelArg(kernel, cl_uint(index), 4, &value)
            case .long(var value):
                status = clSetKernelArg(kernel, cl_uint(index), 8, &value)
            case .float(var value):
                status = clSetKernelArg(kernel, cl_uint(index), 4, &value)
            }
            try check(status, "clSetKernelArg(\(label), argument \(index))")
        }
        var globalSize = global
        if let local {
            for axis in globalSize.indices { globalSize[axis] = (global[axis] + local[axis] - 1) / local[axis] * local[axis] }
        }
        guard globalSize.allSatisfy({ $0 > 0 }) else { return }
        let status: cl_int = recordingEvent(label) { eventOut in
            globalSize.withUnsafeBufferPointer { globalPointer in
                guard let local else {
                    return clEnqueueNDRangeKernel(queue, kernel, cl_uint(global.count), nil, globalPointer.baseAddress,
                                                  nil, 0, nil, eventOut)
                }
                return local.withUnsafeBufferPointer { localPointer in
                    clEnqueueNDRangeKernel(queue, kernel, cl_uint(global.count), nil, globalPointer.baseAddress,
                                           localPointer.baseAddress, 0, nil, eventOut)
                }
            }
        }
        try check(status, "clEnqueueNDRangeKernel(\(label), global \(globalSize), local \(local ?? []))")
    }

    /// Runs an enqueue that takes an event out-pointer: nil unless profiling, else the event it
    /// returns is kept under `label` for ``drainTimings()``.
    func recordingEvent<R>(_ label: String, _ enqueue: (UnsafeMutablePointer<cl_event?>?) -> R) -> R {
        guard profiling else { return enqueue(nil) }
        var event: cl_event?
        let result = enqueue(&event)
        if let event { pendingEvents.append((label, event)) }
        return result
    }

    /// Waits for the queue, then returns each profiled launch since the last call with its device
    /// time in nanoseconds (from `CL_PROFILING_COMMAND_START` to `_END`).
    public func drainTimings() throws -> [(label: String, nanoseconds: UInt64)] {
        try synchronize()
        defer {
            pendingEvents.forEach { clReleaseEvent($0.1) }
            pendingEvents.removeAll()
        }
        return try pendingEvents.map { label, event in
            var start: cl_ulong = 0, end: cl_ulong = 0
            try check(clGetEventProfilingInfo(event, cl_profiling_info(CL_PROFILING_COMMAND_START), 8, &start, nil),
                      "clGetEventProfilingInfo")
            try check(clGetEventProfilingInfo(event, cl_profiling_info(CL_PROFILING_COMMAND_END), 8, &end, nil),
                      "clGetEventProfilingInfo")
            return (label, end - start)
        }
    }
}
