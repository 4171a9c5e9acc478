import CLBackend
import Foundation
import Tensors
import KernelSources
import Testing
import TestSupport

@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct CLRuntimeTests {
    @Test func buildFailureThrowsWithTheFullLog() throws {
        let backend = try TestDevices.backend()
        let source = "__kernel void broken(__global float *x) { x[0] = undefined_identifier_42; }"
        let error = #expect(throws: CLError.self) {
            try backend.buildProgram(source: source, options: "", label: "broken.cl")
        }
        #expect(error?.statusName == "CL_BUILD_PROGRAM_FAILURE")
        #expect(error?.buildLog?.contains("undefined_identifier_42") == true)
        #expect("\(error!)".contains("clBuildProgram(broken.cl"))
    }

    @Test func binaryCacheIsWrittenReadAndSurvivesCorruption() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("mocov3-kernel-cache-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let cache = KernelBinaryCache(directory: directory)

        let first = try TestDevices.backend(cache: cache)
        let tensor = try first.makeTensor(shape: [10])
        try first.fill(tensor, value: 3)
        #expect(try first.download(tensor) == [Float](repeating: 3, count: 10))
        #expect(first.binaryCacheHits == 0)
        let entries = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(entries.count == 1)

        let second = try TestDevices.backend(cache: cache)
        try second.fill(try second.makeTensor(shape: [10]), value: 1)
        #expect(second.binaryCacheHits == 1)

        // A torn or foreign entry is rebuilt from source, never trusted.
        let path = directory.appendingPathComponent(entries[0]).path
        try Data("not a program binary".utf8).write(to: URL(fileURLWithPath: path))
        let third = try TestDevices.backend(cache: cache)
        let checked = try third.makeTensor(shape: [5])
        try third.fill(checked, value: 7)
        #expect(try third.download(checked) == [Float](repeating: 7, count: 5))
        #expect(third.binaryCacheHits == 0)
        #expect((FileManager.default.contents(atPath: path)?.count ?? 0) > 100)
    }

    @Test func cacheSettingsComeFromTheEnvironment() {
        #expect(KernelBinaryCache.fromEnvironment(["MOCOV3_NO_KERNEL_CACHE": "1"]) == nil)
        #expect(KernelBinaryCache.fromEnvironment(["MOCOV3_KERNEL_CACHE_DIR": "/tmp/k"])?.directory.path == "/tmp/k")
        #expect(KernelBinaryCache.fromEnvironment(["XDG_CACHE_HOME": "/tmp/x"])?.directory.path == "/tmp/x/mocov3-cl/kernels")
    }

    @Test func profilingRecordsEachLaunch() throws {
        guard let device = TestDevices.openCLDevice else { return }
        let backend = try CLBackend(device: device, binaryCache: nil, profiling: true)
        let tensor = try backend.makeTensor(shape: [4096])
        try backend.fill(tensor, value: 1)
        try backend.axpy(alpha: 2, x: tensor, y: tensor)
        let timings = try backend.drainTimings()
        #expect(timings.map(\.label) == ["fill", "axpy"])
        #expect(try backend.download(tensor).allSatisfy { $0 == 3 })
    }
}

@Suite struct KernelSourceTests {
    @Test func everyFamilyIsEmbedded() throws {
        for family in ["vector", "gemm"] {
            #expect(try KernelSources.source(family: family).contains("__kernel"))
        }
        #expect(throws: KernelSources.Failure.self) { try KernelSources.source(family: "nonexistent") }
    }

    @Test func developmentOverrideReadsFilesAndRefusesMissingOnes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mocov3-kernels-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "// edited\n__kernel void fill() {}".write(to: directory.appendingPathComponent("vector.cl"), atomically: true,
                                                     encoding: .utf8)
        let environment = [KernelSources.overrideVariable: directory.path]
        #expect(try KernelSources.source(family: "vector", environment: environment).hasPrefix("// edited"))
        let error = #expect(throws: KernelSources.Failure.self) {
            try KernelSources.source(family: "gemm", environment: environment)
        }
        #expect("\(error!)".contains("gemm.cl"))
    }
}
