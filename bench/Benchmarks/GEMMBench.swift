// bench-gemm: GEMM throughput for the ViT-Tiny/Small training shapes on the host (OpenBLAS) and
// on each OpenCL device with each provider, next to this machine's measured sgemm ceiling.
//
//   swift run -c release bench-gemm [--devices host,cpu0] [--providers kernel,clblast]
//                                   [--repeats 7] [--tokens 16640] [--cases SUBSTRING] [--ceiling-side 2048]
//
// Every configuration is checked against the host first (worst error printed), then warmed up
// once (program build, caches), then timed REPEATS times around a synchronized region; the
// median is reported. Output: CSV lines (header first), commentary on lines starting with '#'.
import BenchSupport
import CLBackend
import Foundation
import Tensors

/// `bench-gemm`, also `mocov3-cl bench-gemm` in the bundle (one binary carries the benchmarks).
public enum GEMMBench {
    /// Runs the benchmark with the flags on the command line (`Bench.option`).
    public static func run() throws {
        Bench.warnIfOpenBLASMisdetected()

        struct Case {
            let label: String
            let shape: GEMMShape
        }

        /// The GEMMs of one ViT training step with `tokens` = B·N rows: each Linear's forward (NT: X·Wᵀ),
        /// input gradient (NN: dY·W) and weight gradient (TN: dYᵀ·X), plus the attention batched GEMMs.
        func vitCases(width: Int, heads: Int, tokens: Int, images: Int, sequence: Int) -> [Case] {
            var cases: [Case] = []
            for (name, input, output) in [("qkv", width, 3 * width), ("proj", width, width),
                                          ("fc1", width, 4 * width), ("fc2", 4 * width, width)] {
                cases.append(Case(label: "\(name).fwd", shape: GEMMShape(m: tokens, n: output, k: input, transposeB: true)))
                cases.append(Case(label: "\(name).dx", shape: GEMMShape(m: tokens, n: input, k: output)))
                cases.append(Case(label: "\(name).dw", shape: GEMMShape(m: output, n: input, k: tokens, transposeA: true)))
            }
            let headDim = width / heads
            cases.append(Case(label: "attn.qk", shape: GEMMShape(m: sequence, n: sequence, k: headDim, transposeB: true,
                                                                 batch: images * heads)))
            cases.append(Case(label: "attn.pv", shape: GEMMShape(m: sequence, n: headDim, k: sequence, batch: images * heads)))
            return cases
        }

        let repeats = Int(Bench.option("--repeats") ?? "") ?? 7
        let tokens = Int(Bench.option("--tokens") ?? "") ?? 256 * 65
        let catalog = DeviceCatalog()
        let deviceNames = (Bench.option("--devices") ?? (["host"] + catalog.openCLDevices.map(\.name)).joined(separator: ","))
            .split(separator: ",").map(String.init)
        let caseFilter = Bench.option("--cases")
        let providers = (Bench.option("--providers") ?? "kernel,clblast").split(separator: ",").map(String.init)

        var generator = SplitMix64(seed: 1)
        let host = HostBackend()

        // The ceiling: OpenBLAS sgemm on a large square problem, the best this machine's BLAS does.
        let ceiling = try Bench.sgemmCeiling(repeats: repeats)
        print("# machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; OpenBLAS core \(OpenBLASCore.detectedCore)")
        print("# ceiling: OpenBLAS sgemm 2048^3 = \(String(format: "%.1f", ceiling)) GFLOP/s")
        print("device,provider,case,shape,gflop,median_ms,gflops,ceiling_gflops,percent_of_ceiling,worst_error_ratio,"
              + "device_ceiling_gflops,percent_of_device_ceiling")
        // Each OpenCL device's own ceiling: CLBlast sgemm on a --ceiling-side³ product (2048; a GPU
        // needs 4096 or more to fill), so a GPU's rates read against what that GPU can do.
        let ceilingSide = Int(Bench.option("--ceiling-side") ?? "") ?? 2048

        let cases = vitCases(width: 192, heads: 3, tokens: tokens, images: tokens / 65, sequence: 65).map {
            Case(label: "tiny." + $0.label, shape: $0.shape)
        } + vitCases(width: 384, heads: 12, tokens: tokens, images: tokens / 65, sequence: 65).map {
            Case(label: "small." + $0.label, shape: $0.shape)
        }

        for deviceName in deviceNames {
            let configurations: [(any Backend, String)]
            if deviceName == "host" {
                configurations = [(host, "openblas")]
            } else {
                configurations = try providers.map { provider in
                    (try catalog.makeBackend(requested: deviceName, gemmProvider: try GEMMProvider(parsing: provider)), provider)
                }
            }
            var deviceCeiling = ceiling
            if deviceName != "host" {
                let clblast = try catalog.makeBackend(requested: deviceName, gemmProvider: .clblast)
                deviceCeiling = try Bench.sgemmCeiling(on: clblast, side: ceilingSide, repeats: repeats)
                print("# ceiling \(deviceName): CLBlast sgemm \(ceilingSide)^3 = \(String(format: "%.1f", deviceCeiling)) GFLOP/s")
            }
            for (backend, provider) in configurations {
                for testCase in cases where caseFilter.map({ testCase.label.contains($0) }) ?? true {
                    let shape = testCase.shape
                    let sizes = [shape.m * shape.k * shape.batch, shape.k * shape.n * shape.batch, shape.m * shape.n * shape.batch]
                    let values = sizes.map { randomValues($0, using: &generator) }
                    let tensors = try zip(values, sizes).map { try backend.makeTensor($0, shape: [$1]) }
                    try backend.gemm(shape, alpha: 1, a: tensors[0], b: tensors[1], beta: 0, c: tensors[2])
                    var ratio = 0.0
                    if !(backend is HostBackend) {
                        let reference = try zip(values, sizes).map { try host.makeTensor($0, shape: [$1]) }
                        try host.gemm(shape, alpha: 1, a: reference[0], b: reference[1], beta: 0, c: reference[2])
                        ratio = worstError(try backend.download(tensors[2]), try host.download(reference[2]),
                                           relative: 1e-4, absolute: 2e-7 * Double(shape.k) + 1e-5).ratio
                    }
                    let seconds = try Bench.time(backend, repeats: repeats) {
                        try backend.gemm(shape, alpha: 1, a: tensors[0], b: tensors[1], beta: 0, c: tensors[2])
                    }
                    let rate = shape.flops / seconds / 1e9
                    print([deviceName, provider, testCase.label, "\(shape)".replacingOccurrences(of: " ", with: "_"),
                           String(format: "%.3f", shape.flops / 1e9), String(format: "%.2f", seconds * 1e3),
                           String(format: "%.1f", rate), String(format: "%.1f", ceiling),
                           String(format: "%.0f", 100 * rate / ceiling), String(format: "%.3f", ratio),
                           String(format: "%.1f", deviceCeiling), String(format: "%.0f", 100 * rate / deviceCeiling)].joined(separator: ","))
                    fflush(stdout)
                }
            }
        }
    }
}
