import ArgumentParser
import FileSystem
import Foundation
import Tensors

/// OpenBLAS picks its kernels when it loads, from CPUID, so a misdetected CPU can only be fixed by
/// re-executing with `OPENBLAS_CORETYPE` set; this runs before anything else.
func reexecIfOpenBLASMisdetected() {
    guard let core = OpenBLASCore.coreToForce() else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv(OpenBLASCore.guardVariable, "1", 1)
    let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", arguments)
    // execv returned: it failed. Carry on with the slow kernels, but say so.
    FileHandle.standardError.write(Data(("warning: OpenBLAS chose \(OpenBLASCore.detectedCore) kernels for this CPU; "
        + "set OPENBLAS_CORETYPE=\(core) for ~10× faster host GEMMs\n").utf8))
}

reexecIfOpenBLASMisdetected()

struct MocoV3CL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mocov3-cl",
        abstract: "MoCo v3 self-supervised ViT pre-training on OpenCL devices and the host.",
        // The one place the version lives: `mocov3-cl --version`, and the bundle's name (scripts/bundle.sh).
        version: "0.1.0",
        subcommands: [Devices.self, SelfTestCommand.self, BenchGEMMCommand.self, BenchOpsCommand.self, Step.self, Pretrain.self, KNN.self, LinCls.self, FineTune.self, Export.self, Embed.self, Report.self]
    )
}

/// A command's failure in words: a Foundation file error (`NSCocoaErrorDomain`, POSIX) that no
/// layer translated is turned into the path, the errno in words and what to do, never an NSError dump.
struct FailureMessage: Error, CustomStringConvertible {
    let description: String
}

do {
    var command = try MocoV3CL.parseAsRoot()
    try command.run()
} catch {
    let domain = (error as NSError).domain
    if domain == NSCocoaErrorDomain || domain == NSPOSIXErrorDomain {
        MocoV3CL.exit(withError: FailureMessage(description: FileSystemError.describe(error)))
    }
    MocoV3CL.exit(withError: error)
}
