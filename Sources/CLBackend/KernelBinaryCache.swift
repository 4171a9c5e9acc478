import Foundation

/// An on-disk cache of compiled OpenCL program binaries, so the second run of `mocov3-cl` on a
/// device skips compilation (PoCL spends seconds per family; CLBlast routines 15–30 s, cached by
/// PoCL itself in `POCL_CACHE_DIR`).
///
/// Entries are keyed by a 128-bit hash of the source text, the build options, the device name,
/// the driver version and the platform version, so any change rebuilds. Location, in order:
/// `MOCOV3_KERNEL_CACHE_DIR`, then `$XDG_CACHE_HOME/mocov3-cl/kernels`, then
/// `~/.cache/mocov3-cl/kernels`. `MOCOV3_NO_KERNEL_CACHE=1` (or `--no-kernel-cache`) disables it.
/// Writes are atomic (temporary file, then rename), so a crash never leaves a torn binary; an
/// entry the driver rejects is rebuilt from source and overwritten.
public struct KernelBinaryCache: Sendable {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    /// The cache the environment asks for, or nil when it is disabled.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> KernelBinaryCache?
    {
        if let off = environment["MOCOV3_NO_KERNEL_CACHE"], !off.isEmpty, off != "0" { return nil }
        if let path = environment["MOCOV3_KERNEL_CACHE_DIR"], !path.isEmpty {
            return KernelBinaryCache(directory: URL(fileURLWithPath: path))
        }
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache")
        return KernelBinaryCache(directory: URL(fileURLWithPath: base).appendingPathComponent("mocov3-cl/kernels"))
    }

    /// The file name of an entry: two independent 64-bit FNV-1a hashes of every key part.
    public static func key(source: String, options: String, device: CLDevice) -> String {
        let parts = [source, options, device.deviceName, device.driverVersion, device.platformVersion]
        var first: UInt64 = 0xcbf2_9ce4_8422_2325, second: UInt64 = 0x8422_2325_cbf2_9ce4
        for part in parts {
            for byte in part.utf8 + [0] {
                first = (first ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
                second = (second &* 0x0000_0100_0000_01b3) ^ UInt64(byte)
            }
        }
        return String(format: "%016llx%016llx.bin", first, second)
    }

    public func load(key: String) -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(key).path),
              !data.isEmpty else { return nil }
        return [UInt8](data)
    }

    /// Stores an entry atomically. Failure to write (read-only home, full disk) only costs the
    /// next run a rebuild, so it is reported by the return value rather than thrown.
    @discardableResult
    public func store(_ binary: [UInt8], key: String) -> Bool {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let target = directory.appendingPathComponent(key)
            let temporary = directory.appendingPathComponent(".\(key).\(getpid()).tmp")
            try Data(binary).write(to: temporary)
            if rename(temporary.path, target.path) != 0 {
                try? FileManager.default.removeItem(at: temporary)
                return false
            }
            return true
        } catch {
            return false
        }
    }
}
