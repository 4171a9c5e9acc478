import ArgumentParser
import CLBackend
import Foundation
import Tensors

/// `mocov3-cl devices`: every device with its stable name and what the engine will use on it.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the devices --device accepts (gpu0…, cpu0…, host) and the default.")

    func run() throws {
        let catalog = DeviceCatalog()
        let environmentProvider = try GEMMProvider.fromEnvironment()
        let environmentTile = try GEMMTile.fromEnvironment()
        for device in catalog.openCLDevices {
            let provider = environmentProvider ?? GEMMProvider.default(for: device.deviceClass)
            print("\(device.name.padding(toLength: 6, withPad: " ", startingAt: 0))\(device.deviceName)")
            print("      platform: \(device.platformName) (\(device.platformVersion)), driver \(device.driverVersion)")
            print("      \(device.openCLVersion), \(device.computeUnits) compute units, "
                  + "global memory \(formatBytes(device.globalMemoryBytes)), "
                  + "max allocation \(formatBytes(device.maxAllocationBytes))")
            print("      fp16: \(device.supportsFP16 ? "yes" : "no"), fp64: \(device.supportsFP64 ? "yes" : "no"), "
                  + "GEMM: \(provider.rawValue)"
                  + (provider == .kernel ? " (tile \(environmentTile ?? GEMMTile.default(preferredVectorWidth: device.preferredFloatVectorWidth)))" : "")
                  + ", kernels: \(CLBackend.KernelVariant.default(for: device.deviceClass).rawValue.uppercased())-class")
        }
        print("host  \(HostBackend().summary)")
        if let problem = catalog.openCLProblem { print("OpenCL is unavailable: \(problem)") }
        let chosen = try catalog.resolveName(requested: nil)
        let source = ProcessInfo.processInfo.environment[DeviceCatalog.environmentVariable] != nil
            ? "from \(DeviceCatalog.environmentVariable)" : "first GPU, else first OpenCL CPU, else host"
        print("default: \(chosen) (\(source); --device overrides)")
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let gib = Double(bytes) / Double(1 << 30)
    return gib >= 1 ? String(format: "%.1f GiB", gib) : String(format: "%.0f MiB", Double(bytes) / Double(1 << 20))
}
