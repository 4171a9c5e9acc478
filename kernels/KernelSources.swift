import Foundation

/// The OpenCL C sources under `kernels/cl/`, embedded into the binary at build time so an
/// installed `mocov3-cl` never looks for files.
///
/// Each family is one file (`gemm.cl` holds every GEMM kernel); `common.cl` holds what the families
/// share and is prepended to each of them by ``source(family:)``. For kernel development,
/// `MOCOV3_KERNEL_DIR=/path/to/kernels/cl` makes ``source(family:)`` read both files from disk
/// instead, so an edit needs no rebuild; a file missing there is an error, never a silent
/// fallback to the embedded copy.
public enum KernelSources {
    /// Environment variable naming a directory that overrides the embedded sources.
    public static let overrideVariable = "MOCOV3_KERNEL_DIR"

    /// Every embedded family, by file stem. `common.cl` is not one: it is part of every family.
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
        "knn": PackageResources.knn_cl,
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

    /// The stem of the file prepended to every family (`kernels/cl/common.cl`).
    public static let commonStem = "common"

    /// The OpenCL C program of one family (`"gemm"` for `kernels/cl/gemm.cl`), ready to build:
    /// `common.cl`, then the family's file behind a `#line 1 "<family>.cl"` directive, so the
    /// build log gives errors in the family file its own line numbers.
    public static func source(family: String,
                              environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        guard let bytes = families[family] else {
            throw Failure.unknownFamily(family, known: Array(families.keys))
        }
        let common: String, text: String
        if let directory = environment[overrideVariable], !directory.isEmpty {
            common = try overrideFile(commonStem, in: directory)
            text = try overrideFile(family, in: directory)
        } else {
            common = String(decoding: PackageResources.common_cl, as: UTF8.self)
            text = String(decoding: bytes, as: UTF8.self)
        }
        let separator = common.hasSuffix("\n") ? "" : "\n"
        return "#line 1 \"\(commonStem).cl\"\n" + common + separator + "#line 1 \"\(family).cl\"\n" + text
    }

    /// `<stem>.cl` in the override directory, or ``Failure/overrideFileMissing(path:)`` naming it.
    private static func overrideFile(_ stem: String, in directory: String) throws -> String {
        let path = (directory as NSString).appendingPathComponent("\(stem).cl")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Failure.overrideFileMissing(path: path)
        }
        return text
    }
}
