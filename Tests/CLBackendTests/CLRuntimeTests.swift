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

    /// The `#line` directive behind common.cl keeps build-log positions those of the family file.
    @Test func buildLogNumbersTheFamilyFilesOwnLines() throws {
        let backend = try TestDevices.backend()
        let directory = try KernelSourceTests.overrideDirectory([
            "common": "// common\n// two lines\n",
            "vector": "// edited\n__kernel void fill(__global float *x) { x[0] = undefined_identifier_42; }\n",
        ])
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = try KernelSources.source(family: "vector",
                                              environment: [KernelSources.overrideVariable: directory.path])
        let error = #expect(throws: CLError.self) {
            try backend.buildProgram(source: source, options: "", label: "vector.cl")
        }
        #expect(error?.buildLog?.contains("vector.cl:2:") == true)
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
            let source = try KernelSources.source(family: family)
            #expect(source.contains("__kernel"))
            // common.cl comes first, then the family behind a #line directive.
            #expect(source.hasPrefix("#line 1 \"common.cl\"\n"))
            #expect(source.contains("tree_sum"))
            #expect(source.contains("#line 1 \"\(family).cl\"\n"))
        }
        #expect(throws: KernelSources.Failure.self) { try KernelSources.source(family: "nonexistent") }
        #expect(throws: KernelSources.Failure.self) { try KernelSources.source(family: KernelSources.commonStem) }
    }

    @Test func developmentOverrideReadsFilesAndRefusesMissingOnes() throws {
        let directory = try Self.overrideDirectory(["common": "// common edited\n",
                                                    "vector": "// edited\n__kernel void fill() {}"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let environment = [KernelSources.overrideVariable: directory.path]
        let source = try KernelSources.source(family: "vector", environment: environment)
        #expect(source == "#line 1 \"common.cl\"\n// common edited\n"
                    + "#line 1 \"vector.cl\"\n// edited\n__kernel void fill() {}")
        let error = #expect(throws: KernelSources.Failure.self) {
            try KernelSources.source(family: "gemm", environment: environment)
        }
        #expect("\(error!)".contains("gemm.cl"))
    }

    @Test func developmentOverrideRefusesAMissingCommonFile() throws {
        let directory = try Self.overrideDirectory(["vector": "// edited\n__kernel void fill() {}"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let environment = [KernelSources.overrideVariable: directory.path]
        let error = #expect(throws: KernelSources.Failure.self) {
            try KernelSources.source(family: "vector", environment: environment)
        }
        #expect("\(error!)".contains(directory.appendingPathComponent("common.cl").path))
    }

    /// A fresh temporary folder holding `<stem>.cl` for each entry of `files`.
    static func overrideDirectory(_ files: [String: String]) throws -> URL {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("mocov3-kernels-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (stem, text) in files {
            try text.write(to: directory.appendingPathComponent("\(stem).cl"), atomically: true, encoding: .utf8)
        }
        return directory
    }
}
