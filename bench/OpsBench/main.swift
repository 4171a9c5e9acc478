import Benchmarks

// bench-ops: see bench/Benchmarks/OpsBench.swift.
try OpsBench.run()
