import Foundation
import Tensors

/// Every device `mocov3-cl` can run on, by stable name: `host` plus each OpenCL device
/// (`gpu0`, `gpu1`, …, `cpu0`, …, `acc0`, …, numbered per class in enumeration order).
///
/// Selection order: an explicit `--device`, then `MOCOV3_DEVICE`, then the first GPU, else the
/// first OpenCL CPU, else `host`.
public struct DeviceCatalog {
    public static let environmentVariable = "MOCOV3_DEVICE"

    public let openCLDevices: [CLDevice]
    /// Set when OpenCL could not be queried (a broken ICD); `host` still works.
    public let openCLProblem: String?

    public init() {
        do {
            openCLDevices = try CLDevice.all()
            openCLProblem = nil
        } catch {
            openCLDevices = []
            openCLProblem = "\(error)"
        }
    }

    /// For tests: a catalog over a given device list.
    public init(openCLDevices: [CLDevice]) {
        self.openCLDevices = openCLDevices
        openCLProblem = nil
    }

    /// Every valid `--device` value, in listing order.
    public var names: [String] { openCLDevices.map(\.name) + ["host"] }

    /// The device used when the user names none.
    public var defaultName: String {
        openCLDevices.first { $0.deviceClass == .gpu }?.name
            ?? openCLDevices.first { $0.deviceClass == .cpu }?.name
            ?? "host"
    }

    /// Resolves the user's choice (flag, then environment, then default) to a valid name.
    public func resolveName(requested: String?,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let choice = requested ?? environment[Self.environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
        guard let choice else { return defaultName }
        let name = choice.lowercased()
        guard names.contains(name) else {
            var message = "unknown device '\(choice)'; valid devices: \(names.joined(separator: ", "))"
            if requested == nil { message += " (the name came from \(Self.environmentVariable))" }
            if let openCLProblem { message += "\nOpenCL is unavailable here: \(openCLProblem)" }
            else if openCLDevices.isEmpty {
                message += "\nno OpenCL device was found; install an OpenCL driver (e.g. apt-get install pocl-opencl-icd)"
            }
            throw SelectionError(message: message)
        }
        return name
    }

    /// Opens the backend for a resolved or requested device name.
    public func makeBackend(requested: String?, gemmProvider: GEMMProvider? = nil,
                            kernelCache: KernelBinaryCache? = KernelBinaryCache.fromEnvironment(),
                            profiling: Bool = false) throws -> any Backend {
        let name = try resolveName(requested: requested)
        guard let device = openCLDevices.first(where: { $0.name == name }) else { return HostBackend() }
        let provider = try gemmProvider ?? GEMMProvider.fromEnvironment()
        return try CLBackend(device: device, gemmProvider: provider, binaryCache: kernelCache, profiling: profiling)
    }
}
