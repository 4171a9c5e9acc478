import Benchmarks

// bench-gemm: see bench/Benchmarks/GEMMBench.swift.
try GEMMBench.run()
