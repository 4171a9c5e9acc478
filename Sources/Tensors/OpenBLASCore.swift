import COpenBLAS
import Foundation

/// Detects an OpenBLAS that picked the wrong kernels for this CPU; the CLI fixes it by
/// re-executing the process with `OPENBLAS_CORETYPE` set (``coreToForce(environment:)``).
///
/// OpenBLAS chooses its kernels once, when the library loads, from CPUID. Releases older than the
/// CPU (0.3.21 on Sapphire/Emerald Rapids, family 6 model 207, say) fall back to `Prescott`,
/// which runs sgemm ~10× slower. The variable must be in the environment before the library is
/// loaded, so setting it inside `main` is too late: the only fix from inside is `execv`.
public enum OpenBLASCore {
    /// Set in the re-executed child so that it never loops.
    public static let guardVariable = "MOCOV3_OPENBLAS_REEXEC"

    /// The core OpenBLAS chose at load time, e.g. `Haswell`, `Zen`, `SkylakeX`.
    public static var detectedCore: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Cores whose kernels predate AVX2+FMA; a CPU that has AVX2 deserves better.
    static let preAVX2Cores: Set<String> = [
        "katmai", "coppermine", "northwood", "prescott", "banias", "core2", "penryn", "dunnington",
        "nehalem", "atom", "nano", "sandybridge", "opteron", "opteron_sse3", "barcelona", "bobcat",
        "bulldozer", "piledriver", "steamroller", "excavator", "athlon", "unknown",
    ]
    static let avx512Cores: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

    /// The `OPENBLAS_CORETYPE` this CPU should use when OpenBLAS chose `detected`, or nil when the
    /// choice is right (or when no better one is known).
    ///
    /// - Parameters:
    ///   - detected: what `openblas_get_corename()` returned.
    ///   - flags: the CPU's feature flags (`/proc/cpuinfo` spelling: `avx512f`, `avx2`, `fma`).
    ///   - vendor: the CPUID vendor string (`GenuineIntel`, `AuthenticAMD`).
    public static func recommendedCore(detected: String, flags: Set<String>, vendor: String) -> String? {
        let core = detected.lowercased()
        let hasAVX512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
        if hasAVX512 && !avx512Cores.contains(core) && (preAVX2Cores.contains(core) || core == "haswell") {
            return "SkylakeX"
        }
        if flags.contains("avx2") && flags.contains("fma") && preAVX2Cores.contains(core) {
            return vendor == "AuthenticAMD" ? "Zen" : "Haswell"
        }
        return nil
    }

    /// The first processor's flags and vendor from `/proc/cpuinfo` (Linux); nil elsewhere.
    static func cpuInfo() -> (flags: Set<String>, vendor: String)? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        var flags: Set<String> = [], vendor = ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "vendor_id" && vendor.isEmpty { vendor = parts[1] }
            if parts[0] == "flags" && flags.isEmpty { flags = Set(parts[1].split(separator: " ").map(String.init)) }
            if !vendor.isEmpty && !flags.isEmpty { break }
        }
        return (flags, vendor)
    }

    /// The `OPENBLAS_CORETYPE` to re-execute with when OpenBLAS misdetected this CPU, or nil: when
    /// the user set `OPENBLAS_CORETYPE`, when the detection is right, or in a process that was
    /// already re-executed (``guardVariable`` set). Library code never re-executes; the CLI's
    /// `main` does, first thing, with this answer.
    public static func coreToForce(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, environment[guardVariable] == nil,
              let info = cpuInfo() else { return nil }
        return recommendedCore(detected: detectedCore, flags: info.flags, vendor: info.vendor)
    }
}
