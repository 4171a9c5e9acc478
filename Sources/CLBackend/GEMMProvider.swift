import Foundation

/// Which implementation serves GEMMs on an OpenCL device.
///
/// - `clblast`: CLBlast's tuned kernels, the right choice on GPUs (~80 % of the vendor BLAS once
///   tuned), but 7–28 GFLOP/s on PoCL plus 15–30 s of first-time compilation per routine.
/// - `kernel`: the register-blocked `kernels/cl/gemm.cl`, written for CPU-class devices, where it
///   runs as fast as OpenBLAS; it is correct but slow on GPUs.
///
/// The default follows the device class; `--gemm` or `MOCOV3_GEMM` overrides it.
public enum GEMMProvider: String, CaseIterable, Sendable {
    case clblast
    case kernel

    public static let environmentVariable = "MOCOV3_GEMM"

    public static func `default`(for deviceClass: CLDeviceClass) -> GEMMProvider {
        deviceClass == .gpu ? .clblast : .kernel
    }

    /// Parses a user's choice; the error lists the valid names.
    public init(parsing text: String) throws {
        guard let provider = GEMMProvider(rawValue: text.lowercased()) else {
            throw SelectionError(message: "unknown GEMM provider '\(text)'; choose one of: "
                                 + GEMMProvider.allCases.map(\.rawValue).joined(separator: ", "))
        }
        self = provider
    }

    /// The provider `MOCOV3_GEMM` names, nil when unset.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> GEMMProvider?
    {
        guard let text = environment[environmentVariable], !text.isEmpty else { return nil }
        guard let provider = GEMMProvider(rawValue: text.lowercased()) else {
            throw SelectionError(message: "\(environmentVariable)='\(text)' names no GEMM provider; the accepted values are "
                + GEMMProvider.allCases.map(\.rawValue).joined(separator: ", ") + ", or unset it for the device's default")
        }
        return provider
    }
}

/// A bad device, provider or tile choice from the user, with what to do about it.
public struct SelectionError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// The register tile of `kernels/cl/gemm.cl`: each work-item computes `rows` × (`vectorWidth` ·
/// `vectors`) elements of C in registers.
public struct GEMMTile: Equatable, CustomStringConvertible, Sendable {
    public var rows: Int
    public var vectorWidth: Int
    public var vectors: Int

    public init(rows: Int, vectorWidth: Int, vectors: Int) {
        self.rows = rows
        self.vectorWidth = vectorWidth
        self.vectors = vectors
    }

    /// Columns of C per work-item.
    public var columns: Int { vectorWidth * vectors }

    /// The tile that fits the vector register file: accumulators of the device's preferred width
    /// plus the B vectors and one broadcast (AVX2: 16 ymm registers; AVX-512: 32 zmm).
    public static func `default`(preferredVectorWidth: Int) -> GEMMTile {
        switch preferredVectorWidth {
        case 16...: return GEMMTile(rows: 8, vectorWidth: 16, vectors: 2)
        // 6×16 on AVX2 (12 accumulators + 2 B vectors + 1 broadcast of 16 ymm): 115 GFLOP/s on
        // ViT shapes here, against 65–73 for 4×24 and 60–68 for 8×16 (bench/RESULTS.md).
        case 8: return GEMMTile(rows: 6, vectorWidth: 8, vectors: 2)
        default: return GEMMTile(rows: 4, vectorWidth: 4, vectors: 3)
        }
    }

    public static let environmentVariable = "MOCOV3_GEMM_TILE"

    /// `MOCOV3_GEMM_TILE=ROWSxWIDTHxVECTORS` (e.g. `4x8x3`), for tuning experiments; nil when
    /// unset or empty. A value that is set but malformed is an error naming the variable and the
    /// accepted form, never a silent fallback to the default tile.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> GEMMTile?
    {
        guard let text = environment[environmentVariable], !text.isEmpty else { return nil }
        let parts = text.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 3, let rows = parts[0], let width = parts[1], let vectors = parts[2],
              (1...16).contains(rows), [4, 8, 16].contains(width), (1...8).contains(vectors) else {
            throw SelectionError(message: "\(environmentVariable)='\(text)' is not a tile; the accepted form is "
                + "ROWSxWIDTHxVECTORS with ROWS in 1...16, WIDTH 4, 8 or 16 and VECTORS in 1...8 (e.g. 6x8x2), "
                + "or unset it for the device's default")
        }
        return GEMMTile(rows: rows, vectorWidth: width, vectors: vectors)
    }

    public static let splitChunkVariable = "MOCOV3_GEMM_KCHUNK"

    /// `MOCOV3_GEMM_KCHUNK=K`: the K per split of the hand-written GEMM's split-K mode (default
    /// 512), for tuning experiments. Set but not an integer in 16...65536 is an error.
    public static func splitChunkFromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> Int?
    {
        guard let text = environment[splitChunkVariable], !text.isEmpty else { return nil }
        guard let chunk = Int(text), (16...65536).contains(chunk) else {
            throw SelectionError(message: "\(splitChunkVariable)='\(text)' is not a K chunk; the accepted form is an "
                + "integer in 16...65536 (e.g. 512), or unset it for the default")
        }
        return chunk
    }

    /// Build options for gemm.cl.
    var buildOptions: String { "-DROWS=\(rows) -DVW=\(vectorWidth) -DVECS=\(vectors)" }

    public var description: String { "\(rows)x\(columns)" }
}
