import ArgumentParser
import CLBackend
import Tensors

/// The device flags every compute command takes.
struct DeviceOptions: ParsableArguments {
    @Option(help: "The device, by its name in `mocov3-cl devices`; without it, MOCOV3_DEVICE, else the first GPU, else the first OpenCL CPU, else host.")
    var device: String?

    @Option(help: "The GEMM provider on OpenCL devices: clblast or kernel; without it, MOCOV3_GEMM, else the device class's default.")
    var gemm: String?

    @Flag(help: "Neither read nor write the on-disk cache of compiled kernels.")
    var noKernelCache = false

    /// The chosen device's name, without opening it (`step --dry-run`); an unknown name is an
    /// error listing the valid ones.
    func resolvedName() throws -> String { try DeviceCatalog().resolveName(requested: device) }

    /// Opens the chosen backend (the devices are enumerated once); unknown names and providers are
    /// errors listing the valid ones. Its `name` is the resolved device name.
    /// With `profiling`, an OpenCL backend records every launch's device time (``CLBackend/drainTimings()``).
    func makeBackend(profiling: Bool = false) throws -> any Backend {
        try DeviceCatalog().makeBackend(requested: device, gemmProvider: try gemm.map(GEMMProvider.init(parsing:)),
                                        kernelCache: noKernelCache ? nil : KernelBinaryCache.fromEnvironment(),
                                        profiling: profiling)
    }

    /// A data-parallel rank's backend: `--device gpu` (or no flag, where the first device is a GPU)
    /// means gpu<local rank>, `cpu` cpu<local rank>, each modulo the machine's count of that class;
    /// an explicit name (`gpu1`, `host`) is taken as given.
    func makeBackend(localRank: Int) throws -> any Backend {
        let catalog = DeviceCatalog()
        let requested = device?.lowercased() ?? catalog.defaultName.filter(\.isLetter)
        var name = device
        for kind in ["gpu", "cpu"] where requested == kind {
            let devices = catalog.names.filter { $0.hasPrefix(kind) && $0.dropFirst(kind.count).allSatisfy(\.isNumber) }
            guard !devices.isEmpty else { throw ValidationError("--device \(kind): this machine has no \(kind) device") }
            name = devices[localRank % devices.count]
        }
        return try catalog.makeBackend(requested: name, gemmProvider: try gemm.map(GEMMProvider.init(parsing:)),
                                       kernelCache: noKernelCache ? nil : KernelBinaryCache.fromEnvironment())
    }
}
