import Foundation

/// The OpenCL C sources under `kernels/cl/`, embedded into the binary at build time so an
/// installed `mocov3-cl` never looks for files.
///
/// Each family is one file (`gemm.cl` holds every GEMM kernel). For kernel development,
/// `MOCOV3_KERNEL_DIR=/path/to/kernels/cl` makes ``source(family:)`` read the files from disk
/// instead, so an edit needs no rebuild; a file missing there is an error, never a silent
/// fallback to the embedded copy.
public enum KernelSources {
    /// Environment variable naming a directory that overrides the embedded sources.
    public static let overrideVariable = "MOCOV3_KERNEL_DIR"

    /// Every embedded family, by file stem.
    public static let families: [String: [UInt8]] = [
        "vector": PackageResources.vector_cl,
        "gemm": PackageResources.gemm_cl,
        "elementwise": PackageResources.elementwise_cl,
        "reduce": PackageResources.reduce_cl,
        "optimizer": PackageResources.optimizer_cl,
        "softmax": PackageResources.softmax_cl,
        "l2norm": PackageResources.l2norm_cl,
        "patch_embed": PackageResources.patch_embed_cl,
        "layernorm": PackageResources.layernorm_cl,
        "batchnorm": PackageResources.batchnorm_cl,
        "attention": PackageResources.attention_cl,
    ]

    public enum Failure: Error, CustomStringConvertible {
        case unknownFamily(String, known: [String])
        case overrideFileMissing(path: String)

        public var description: String {
            switch self {
            case .unknownFamily(let name, let known):
                return "no OpenCL kernel family '\(name)'; embedded families: \(known.sorted().joined(separator: ", "))"
            case .overrideFileMissing(let path):
                return "\(KernelSources.overrideVariable) is set but \(path) does not exist or cannot be read; "
                    + "point it at the checkout's kernels/cl folder or unset it to use the embedded sources"
            }
        }
    }

    /// The OpenCL C text of one family (`"gemm"` for `kernels/cl/gemm.cl`).
    public static func source(family: String,
                              environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        guard let bytes = families[family] else {
            throw Failure.unknownFamily(family, known: Array(families.keys))
        }
        if let directory = environment[overrideVariable], !directory.isEmpty {
            let path = (directory as NSString).appendingPathComponent("\(family).cl")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Failure.overrideFileMissing(path: path)
            }
            return text
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
