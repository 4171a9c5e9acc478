import ArgumentParser
import CLBackend
import Foundation
import Tensors

/// `mocov3-cl check`: runs the op set on a device and compares it with the host backend, so a
/// user can trust a new GPU/driver before training on it.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare a device's GEMM and vector ops against the host backend on random inputs.")

    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        let backend = try deviceOptions.makeBackend()
        let host = HostBackend()
        var generator = SplitMix64(seed: 7)
        var failures = 0
        let shapes = [
            GEMMShape(m: 130, n: 192, k: 576, transposeB: true),
            GEMMShape(m: 130, n: 576, k: 192),
            GEMMShape(m: 192, n: 576, k: 130, transposeA: true),
            GEMMShape(m: 65, n: 65, k: 32, transposeB: true, batch: 6),
        ]
        for shape in shapes {
            let a = randomValues(shape.m * shape.k * shape.batch, using: &generator)
            let b = randomValues(shape.k * shape.n * shape.batch, using: &generator)
            let c = randomValues(shape.m * shape.n * shape.batch, using: &generator)
            func run(on backend: any Backend) throws -> [Float] {
                let tensors = try [a, b, c].map { try backend.makeTensor($0, shape: [$0.count]) }
                try backend.gemm(shape, alpha: 0.75, a: tensors[0], b: tensors[1], beta: 0.5, c: tensors[2])
                return try backend.download(tensors[2])
            }
            let expected = try run(on: host)
            let start = DispatchTime.now().uptimeNanoseconds
            let actual = try run(on: backend)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let worst = worstError(actual, expected, relative: 1e-4, absolute: 1e-5)
            if !worst.passed { failures += 1 }
            print("gemm \(shape): \(worst.passed ? "ok" : "MISMATCH") worst |a-r|/(atol+rtol|r|) = "
                  + String(format: "%.3f", worst.ratio) + " at \(worst.index)"
                  + String(format: " (%.2f ms incl. transfers)", seconds * 1e3))
        }
        guard failures == 0 else {
            throw ValidationError("\(failures) op(s) on \(backend.name) disagree with the host backend")
        }
        print("\(backend.name): all ops agree with host")
    }
}
