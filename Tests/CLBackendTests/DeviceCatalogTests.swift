import CLBackend
import Testing
import TestSupport

@Suite struct DeviceCatalogTests {
    @Test func namesAreNumberedPerClassInEnumerationOrder() {
        #expect(CLDevice.stableNames(for: [.cpu, .gpu, .gpu, .accelerator, .cpu]) == ["cpu0", "gpu0", "gpu1", "acc0", "cpu1"])
        #expect(CLDevice.stableNames(for: []) == [])
    }

    @Test func withoutOpenCLTheDefaultIsHost() throws {
        let catalog = DeviceCatalog(openCLDevices: [])
        #expect(catalog.names == ["host"])
        #expect(try catalog.resolveName(requested: nil, environment: [:]) == "host")
    }

    @Test func unknownDeviceListsTheValidNames() throws {
        let catalog = DeviceCatalog(openCLDevices: [])
        let error = #expect(throws: SelectionError.self) {
            try catalog.resolveName(requested: "gpu7", environment: [:])
        }
        #expect(error?.message.contains("unknown device 'gpu7'") == true)
        #expect(error?.message.contains("valid devices: host") == true)
        #expect(error?.message.contains("pocl-opencl-icd") == true)
    }

    @Test func environmentOverridesTheDefaultAndTheFlagOverridesBoth() throws {
        let catalog = DeviceCatalog()
        #expect(try catalog.resolveName(requested: nil, environment: ["MOCOV3_DEVICE": "host"]) == "host")
        #expect(try catalog.resolveName(requested: "HOST", environment: ["MOCOV3_DEVICE": "nonsense"]) == "host")
        let error = #expect(throws: SelectionError.self) {
            try catalog.resolveName(requested: nil, environment: ["MOCOV3_DEVICE": "tpu0"])
        }
        #expect(error?.message.contains("MOCOV3_DEVICE") == true)
    }

    @Test(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason))
    func realDevicesAreListedBeforeHostAndPreferGPUs() throws {
        let catalog = DeviceCatalog()
        #expect(catalog.names.last == "host")
        let expected = catalog.openCLDevices.first { $0.deviceClass == .gpu }?.name ?? catalog.openCLDevices[0].name
        #expect(try catalog.resolveName(requested: nil, environment: [:]) == expected)
        #expect(try catalog.makeBackend(requested: "host").name == "host")
    }

    @Test func gemmProviderDefaultsFollowTheDeviceClass() throws {
        #expect(GEMMProvider.default(for: .gpu) == .clblast)
        #expect(GEMMProvider.default(for: .cpu) == .kernel)
        #expect(try GEMMProvider.fromEnvironment(["MOCOV3_GEMM": "CLBlast"]) == .clblast)
        #expect(try GEMMProvider.fromEnvironment([:]) == nil)
        #expect(throws: SelectionError.self) { try GEMMProvider(parsing: "cublas") }
        #expect { try GEMMProvider.fromEnvironment(["MOCOV3_GEMM": "cublas"]) } throws: {
            "\($0)".contains("MOCOV3_GEMM='cublas'") && "\($0)".contains("clblast, kernel")
        }
    }

    /// Tuning variables that are set but malformed are errors naming the variable and the
    /// accepted form; unset or empty means the default.
    @Test func malformedTuningVariablesAreErrors() throws {
        #expect(try GEMMTile.fromEnvironment([:]) == nil)
        #expect(try GEMMTile.fromEnvironment(["MOCOV3_GEMM_TILE": ""]) == nil)
        #expect(try GEMMTile.fromEnvironment(["MOCOV3_GEMM_TILE": "4x8x3"]) == GEMMTile(rows: 4, vectorWidth: 8, vectors: 3))
        for bad in ["6x8", "6x7x2", "0x8x2", "6x8x2x1", "six", "6x8x"] {
            #expect(throws: SelectionError.self, "\(bad)") { try GEMMTile.fromEnvironment(["MOCOV3_GEMM_TILE": bad]) }
        }
        #expect { try GEMMTile.fromEnvironment(["MOCOV3_GEMM_TILE": "6x8"]) } throws: {
            "\($0)".contains("MOCOV3_GEMM_TILE='6x8'") && "\($0)".contains("ROWSxWIDTHxVECTORS")
        }
        #expect(try GEMMTile.splitChunkFromEnvironment([:]) == nil)
        #expect(try GEMMTile.splitChunkFromEnvironment(["MOCOV3_GEMM_KCHUNK": "256"]) == 256)
        for bad in ["0", "-512", "lots", "1e3"] {
            #expect(throws: SelectionError.self, "\(bad)") {
                try GEMMTile.splitChunkFromEnvironment(["MOCOV3_GEMM_KCHUNK": bad])
            }
        }
    }
}
