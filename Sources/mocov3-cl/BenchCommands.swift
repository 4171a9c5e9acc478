import ArgumentParser
import Benchmarks

/// `mocov3-cl bench-gemm …` and `mocov3-cl bench-ops …`: the benchmarks of bench/, carried by the
/// bundle's one binary (three statically linked binaries would triple its size). Hidden from the
/// help; their flags are those of `swift run -c release bench-gemm|bench-ops`.
struct BenchGEMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gemm", abstract: "The GEMM benchmark (bench/Benchmarks/GEMMBench.swift).", shouldDisplay: false)

    @Argument(parsing: .allUnrecognized) var flags: [String] = []

    func run() throws { try GEMMBench.run() }
}

struct BenchOpsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-ops", abstract: "The kernel benchmark (bench/Benchmarks/OpsBench.swift).", shouldDisplay: false)

    @Argument(parsing: .allUnrecognized) var flags: [String] = []

    func run() throws { try OpsBench.run() }
}
