import Tensors
import Testing

@Suite struct OpenBLASCoreTests {
    static let avx512: Set<String> = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]
    static let avx2: Set<String> = ["sse4_2", "avx", "avx2", "fma"]

    @Test func sapphireRapidsMisdetectedAsPrescottGetsSkylakeX() {
        // OpenBLAS 0.3.21 on family 6 model 207 (this project's CI machines at one time).
        #expect(OpenBLASCore.recommendedCore(detected: "Prescott", flags: Self.avx512, vendor: "GenuineIntel") == "SkylakeX")
        #expect(OpenBLASCore.recommendedCore(detected: "Haswell", flags: Self.avx512, vendor: "GenuineIntel") == "SkylakeX")
    }

    @Test func avx2MachinesMisdetectedAsOldCoresGetAnAVX2Core() {
        #expect(OpenBLASCore.recommendedCore(detected: "Prescott", flags: Self.avx2, vendor: "AuthenticAMD") == "Zen")
        #expect(OpenBLASCore.recommendedCore(detected: "Nehalem", flags: Self.avx2, vendor: "GenuineIntel") == "Haswell")
    }

    @Test func correctDetectionsAreLeftAlone() {
        #expect(OpenBLASCore.recommendedCore(detected: "SkylakeX", flags: Self.avx512, vendor: "GenuineIntel") == nil)
        #expect(OpenBLASCore.recommendedCore(detected: "SapphireRapids", flags: Self.avx512, vendor: "GenuineIntel") == nil)
        #expect(OpenBLASCore.recommendedCore(detected: "Zen", flags: Self.avx2, vendor: "AuthenticAMD") == nil)
        #expect(OpenBLASCore.recommendedCore(detected: "Haswell", flags: Self.avx2, vendor: "GenuineIntel") == nil)
        // A CPU without AVX2 really is an old core.
        #expect(OpenBLASCore.recommendedCore(detected: "Nehalem", flags: ["sse4_2"], vendor: "GenuineIntel") == nil)
    }

    @Test func thisProcessUsesAReasonableCore() throws {
        // The test runner cannot re-exec; it reports what OpenBLAS chose so a slow CI is explained.
        let core = OpenBLASCore.detectedCore
        #expect(!core.isEmpty && core != "unknown")
    }
}
