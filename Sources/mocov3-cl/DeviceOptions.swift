import ArgumentParser
import CLBackend
import Tensors
import Train

/// The device flags every compute command takes.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Device name from `mocov3-cl devices` (default: MOCOV3_DEVICE, else first GPU/CPU, else host).")
    var device: String?

    @Option(help: "GEMM provider on OpenCL devices: clblast or kernel (default by device class; MOCOV3_GEMM).")
    var gemm: String?

    @Flag(help: "Do not read or write the on-disk kernel binary cache.")
    var noKernelCache = false

    /// Opens the chosen backend; unknown names and providers are errors listing the valid ones.
    func makeBackend() throws -> any Backend {
        try DeviceCatalog().makeBackend(requested: device, gemmProvider: try gemm.map(GEMMProvider.init(parsing:)),
                                        kernelCache: noKernelCache ? nil : KernelBinaryCache.fromEnvironment())
    }
}
