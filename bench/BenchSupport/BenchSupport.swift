import CLBackend
import Dispatch
import Foundation
import Tensors

/// Shared pieces of the benchmarks: flags, timing and ceilings.
public enum Bench {
    /// The value after `--name` on the command line, if any.
    public static func option(_ name: String) -> String? {
        let arguments = CommandLine.arguments
        guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }

    public static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    /// Says so on stderr when OpenBLAS picked the wrong kernels for this CPU (the `mocov3-cl`
    /// binary re-executes itself in that case; a benchmark reports what it measured, and how to
    /// measure what a user gets).
    public static func warnIfOpenBLASMisdetected() {
        guard let core = OpenBLASCore.coreToForce() else { return }
        FileHandle.standardError.write(Data(("warning: OpenBLAS chose \(OpenBLASCore.detectedCore) kernels for this CPU; "
            + "rerun with OPENBLAS_CORETYPE=\(core) to measure the host as mocov3-cl runs it\n").utf8))
    }

    /// Seconds per call of `body` on `backend`: one untimed warm-up (program builds, caches,
    /// first-touch allocations), then the median of `repeats` synchronized runs.
    public static func time(_ backend: any Backend, repeats: Int, _ body: () throws -> Void) throws -> Double {
        try body()
        try backend.synchronize()
        var samples: [Double] = []
        for _ in 0..<max(repeats, 1) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            try backend.synchronize()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return median(samples)
    }

    /// A device's sgemm ceiling in GFLOP/s: a `side`³ product through the backend's own GEMM
    /// (OpenBLAS on the host, 2048³ by default; CLBlast on an OpenCL device opened with it, where
    /// a GPU needs 4096³ or more to fill).
    public static func sgemmCeiling(on backend: any Backend = HostBackend(), side: Int = 2048, repeats: Int) throws -> Double {
        var generator = SplitMix64(seed: 1)
        let shape = GEMMShape(m: side, n: side, k: side)
        let tensors = try (0..<3).map { _ in
            try backend.makeTensor(randomValues(side * side, using: &generator), shape: [side * side])
        }
        let seconds = try time(backend, repeats: repeats) {
            try backend.gemm(shape, alpha: 1, a: tensors[0], b: tensors[1], beta: 0, c: tensors[2])
        }
        return shape.flops / seconds / 1e9
    }

    /// An OpenCL device's copy bandwidth: the driver's `clEnqueueCopyBuffer` of `megabytes` MiB
    /// within device memory, counting bytes read plus written, GB/s.
    public static func copyBandwidth(on device: CLBackend, megabytes: Int = 256, repeats: Int) throws -> Double {
        let count = megabytes << 18
        let source = try device.makeTensor(shape: [count]), target = try device.makeTensor(shape: [count])
        try device.fill(source, value: 1)
        let seconds = try time(device, repeats: repeats) { try device.copy(from: source, to: target) }
        return 2 * Double(count * 4) / seconds / 1e9
    }

    /// This machine's copy bandwidth: `memcpy` of 256 MiB, counting bytes read plus written, GB/s.
    public static func copyBandwidth(repeats: Int) -> Double {
        let bytes = 256 << 20
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let target = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { source.deallocate(); target.deallocate() }
        memset(source, 1, bytes)
        memset(target, 0, bytes)
        var samples: [Double] = []
        for _ in 0..<max(repeats, 1) {
            let start = DispatchTime.now().uptimeNanoseconds
            memcpy(target, source, bytes)
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(bytes) / median(samples) / 1e9
    }
}
