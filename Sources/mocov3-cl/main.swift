import ArgumentParser
import Tensors

// OpenBLAS picks its kernels when it loads, from CPUID; a misdetected CPU can only be fixed by
// re-executing with OPENBLAS_CORETYPE set, so this runs before anything else.
OpenBLASCore.reexecIfMisdetected()

struct MocoV3CL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mocov3-cl",
        abstract: "MoCo v3 self-supervised ViT pre-training on OpenCL devices and the host.",
        subcommands: [Devices.self, Check.self, Step.self, Pretrain.self, KNN.self]
    )
}

MocoV3CL.main()
