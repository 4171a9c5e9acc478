// swift-tools-version:6.0
// mocov3-cl: MoCo v3 self-supervised ViT pre-training on OpenCL (CLBlast + hand-written kernels)
// with an OpenBLAS host backend behind one tensor protocol. Architecture: README.md.
import PackageDescription

let package = Package(
    name: "mocov3-cl",
    products: [
        .executable(name: "mocov3-cl", targets: ["mocov3-cl"]),
        .executable(name: "bench-gemm", targets: ["GEMMBench"]),
        .executable(name: "bench-ops", targets: ["OpsBench"]),
        .executable(name: "bench-augment", targets: ["AugmentBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
    ],
    targets: [
        // MARK: C shims (module map + header, no Swift API)
        .systemLibrary(name: "COpenCL", path: "Sources/COpenCL"),
        .systemLibrary(name: "CCLBlast", path: "Sources/CCLBlast"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),

        // MARK: OpenCL C sources (the kernels), embedded into the binary at build time
        .target(name: "KernelSources", path: "kernels", resources: [.embedInCode("cl")]),

        // MARK: Tensor protocol, op set and the host (OpenBLAS) backend
        // GELU's loops built for AVX-512, AVX2 and the baseline, picked at run time (the Swift
        // targets are compiled for baseline x86-64).
        .target(name: "CHostKernels"),
        .target(name: "Tensors", dependencies: ["COpenBLAS", "CHostKernels", .product(name: "RealModule", package: "swift-numerics")]),

        // MARK: OpenCL backend (runtime, program cache, CLBlast, launchers for kernels/cl/*.cl) and
        // the device catalog, the one place that opens a device of either backend
        .target(name: "CLBackend", dependencies: ["Tensors", "KernelSources", "COpenCL", "CCLBlast"]),

        // MARK: File operations that report failures in words (errno, path, what to do), atomic
        // replacement, appended lines, the run-folder lock, and the fault injection tests use
        .target(name: "FileSystem"),

        // MARK: The data-parallel process group: one process, Open MPI loaded at run time
        // (dlopen; nothing links MPI), or ranks as threads for the tests
        .target(name: "Collective"),

        // MARK: Data: dataset readers (IDX, CIFAR binary, image folders) and the augmentations
        .target(name: "Datasets", dependencies: ["CZlib", "CTurboJPEG", "CPNG"]),
        .target(name: "Augment", dependencies: ["Datasets", "Tensors"]),

        // MARK: Model and training (written against the tensor protocol only; they receive a Backend)
        .target(name: "Model", dependencies: ["Tensors", "FileSystem", "Collective"]),
        .target(name: "Train", dependencies: ["Model", "Tensors", "Datasets", "Augment", "FileSystem", "Collective"]),

        // MARK: `mocov3-cl selftest`: every op and whole MoCo steps on a device against the host
        .target(name: "SelfTest", dependencies: ["Train", "Model", "Tensors"]),

        // MARK: Command-line tool
        .executableTarget(
            name: "mocov3-cl",
            dependencies: ["Train", "Model", "Datasets", "Tensors", "CLBackend", "SelfTest", "Benchmarks", "FileSystem", "Collective",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        // MARK: Benchmarks (swift run -c release bench-gemm / bench-ops / bench-augment)
        .target(name: "BenchSupport", dependencies: ["Tensors", "CLBackend"], path: "bench/BenchSupport"),
        .target(name: "Benchmarks", dependencies: ["BenchSupport", "Tensors", "CLBackend"], path: "bench/Benchmarks"),
        .executableTarget(name: "GEMMBench", dependencies: ["Benchmarks"], path: "bench/GEMMBench"),
        .executableTarget(name: "AugmentBench", dependencies: ["BenchSupport", "Augment", "Datasets", "Tensors"],
                          path: "bench/AugmentBench"),
        .executableTarget(name: "OpsBench", dependencies: ["Benchmarks"], path: "bench/OpsBench"),

        // MARK: Tests
        .target(name: "TestSupport", dependencies: ["Tensors", "CLBackend", "SelfTest"], path: "Tests/TestSupport"),
        .testTarget(name: "FileSystemTests", dependencies: ["FileSystem"]),
        .testTarget(name: "SelfTestTests", dependencies: ["SelfTest", "Tensors", "CLBackend", "TestSupport"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "TestSupport"]),
        .testTarget(name: "CLBackendTests", dependencies: ["CLBackend", "Tensors", "KernelSources", "TestSupport"]),
        .testTarget(name: "TrainTests", dependencies: ["Train", "Model", "Tensors", "CLBackend", "Datasets", "Augment",
                                                       "TestSupport", "FileSystem", "Collective"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TestSupport", "CZlib", "CTurboJPEG", "CPNG"]),
        .testTarget(name: "AugmentTests", dependencies: ["Augment", "Datasets", "Tensors", "TestSupport"]),
        .testTarget(name: "ModelTests",
                    dependencies: ["Model", "Tensors", "Train", "Augment", "Datasets", "TestSupport", "FileSystem", "Collective",
                                   .product(name: "RealModule", package: "swift-numerics")],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)
