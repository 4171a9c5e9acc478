import COpenCL
import Foundation

/// The kind of an OpenCL device, which fixes its stable name prefix and its default kernels.
public enum CLDeviceClass: String, Sendable, CaseIterable {
    case gpu, cpu, accelerator

    /// Name prefix: `gpu0`, `cpu0`, `acc0`.
    public var prefix: String {
        switch self {
        case .gpu: return "gpu"
        case .cpu: return "cpu"
        case .accelerator: return "acc"
        }
    }
}

/// One OpenCL device with the properties `mocov3-cl devices` prints and the launchers need.
public struct CLDevice: @unchecked Sendable {
    public let id: cl_device_id
    public let platformID: cl_platform_id
    /// Stable name: devices are numbered per class in platform-then-device enumeration order.
    public let name: String
    public let deviceClass: CLDeviceClass
    public let platformName: String
    public let platformVersion: String
    public let deviceName: String
    public let vendor: String
    public let driverVersion: String
    public let openCLVersion: String
    public let computeUnits: Int
    public let globalMemoryBytes: UInt64
    public let maxAllocationBytes: UInt64
    public let localMemoryBytes: UInt64
    public let maxWorkGroupSize: Int
    public let preferredFloatVectorWidth: Int
    public let supportsFP16: Bool
    public let supportsFP64: Bool

    /// Every OpenCL device on every platform, named. No platform (no ICD installed) is not an
    /// error: the list is empty and only `host` remains.
    public static func all() throws -> [CLDevice] {
        var platformCount: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &platformCount)
        // -1001 is CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no platform.
        if status == -1001 || platformCount == 0 { return [] }
        try check(status, "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try check(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")

        var found: [(cl_platform_id, cl_device_id, CLDeviceClass)] = []
        for case let platform? in platforms {
            var deviceCount: cl_uint = 0
            let status = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount)
            if status == CL_DEVICE_NOT_FOUND || deviceCount == 0 { continue }
            try check(status, "clGetDeviceIDs")
            var devices = [cl_device_id?](repeating: nil, count: Int(deviceCount))
            try check(clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &devices, nil),
                      "clGetDeviceIDs")
            for case let device? in devices {
                let type: cl_device_type = try scalarInfo(device, CL_DEVICE_TYPE)
                let deviceClass: CLDeviceClass =
                    type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0 ? .gpu
                    : type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 ? .cpu : .accelerator
                found.append((platform, device, deviceClass))
            }
        }
        let names = stableNames(for: found.map(\.2))
        var named: [CLDevice] = []
        for deviceClass in CLDeviceClass.allCases {
            for (index, entry) in found.enumerated() where entry.2 == deviceClass {
                named.append(try CLDevice(id: entry.1, platform: entry.0, name: names[index], deviceClass: deviceClass))
            }
        }
        return named
    }

    /// Stable names for devices of the given classes, in enumeration order: each class is
    /// numbered from 0 in the order its devices were enumerated (`[cpu, gpu, gpu]` gives
    /// `[cpu0, gpu0, gpu1]`). Listings show GPUs first, then CPUs, then accelerators.
    public static func stableNames(for classes: [CLDeviceClass]) -> [String] {
        var counters: [CLDeviceClass: Int] = [:]
        return classes.map { deviceClass in
            let index = counters[deviceClass, default: 0]
            counters[deviceClass] = index + 1
            return "\(deviceClass.prefix)\(index)"
        }
    }

    init(id: cl_device_id, platform: cl_platform_id, name: String, deviceClass: CLDeviceClass) throws {
        self.id = id
        self.platformID = platform
        self.name = name
        self.deviceClass = deviceClass
        platformName = try Self.platformString(platform, CL_PLATFORM_NAME)
        platformVersion = try Self.platformString(platform, CL_PLATFORM_VERSION)
        deviceName = try Self.stringInfo(id, CL_DEVICE_NAME)
        vendor = try Self.stringInfo(id, CL_DEVICE_VENDOR)
        driverVersion = try Self.stringInfo(id, CL_DRIVER_VERSION)
        openCLVersion = try Self.stringInfo(id, CL_DEVICE_VERSION)
        computeUnits = Int(try Self.scalarInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS) as cl_uint)
        globalMemoryBytes = try Self.scalarInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE)
        maxAllocationBytes = try Self.scalarInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE)
        localMemoryBytes = try Self.scalarInfo(id, CL_DEVICE_LOCAL_MEM_SIZE)
        maxWorkGroupSize = Int(try Self.scalarInfo(id, CL_DEVICE_MAX_WORK_GROUP_SIZE) as Int)
        preferredFloatVectorWidth = Int(try Self.scalarInfo(id, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT) as cl_uint)
        let extensions = Set(try Self.stringInfo(id, CL_DEVICE_EXTENSIONS).split(separator: " ").map(String.init))
        supportsFP16 = extensions.contains("cl_khr_fp16")
        let doubleConfig: cl_device_fp_config = try Self.scalarInfo(id, CL_DEVICE_DOUBLE_FP_CONFIG)
        supportsFP64 = extensions.contains("cl_khr_fp64") || doubleConfig != 0
    }

    static func scalarInfo<T>(_ device: cl_device_id, _ parameter: Int32) throws -> T {
        let value = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { value.deallocate() }
        try check(clGetDeviceInfo(device, cl_device_info(parameter), MemoryLayout<T>.size, value, nil),
                  "clGetDeviceInfo(\(parameter))")
        return value.pointee
    }

    static func stringInfo(_ device: cl_device_id, _ parameter: Int32) throws -> String {
        var size = 0
        try check(clGetDeviceInfo(device, cl_device_info(parameter), 0, nil, &size), "clGetDeviceInfo(\(parameter))")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try check(clGetDeviceInfo(device, cl_device_info(parameter), size, &bytes, nil), "clGetDeviceInfo(\(parameter))")
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }

    static func platformString(_ platform: cl_platform_id, _ parameter: Int32) throws -> String {
        var size = 0
        try check(clGetPlatformInfo(platform, cl_platform_info(parameter), 0, nil, &size), "clGetPlatformInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try check(clGetPlatformInfo(platform, cl_platform_info(parameter), size, &bytes, nil), "clGetPlatformInfo")
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }
}
