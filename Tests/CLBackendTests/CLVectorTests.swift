import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/vector.cl against the host backend: sizes around the work-group size (64),
/// offsets, NaN-poisoned outputs and canary tails.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct CLVectorTests {
    static let counts = [1, 7, 63, 64, 65, 1000, 16_640 * 3 + 1]
    let device: CLBackend
    let host = HostBackend()

    init() throws { device = try TestDevices.backend() }

    @Test(arguments: counts)
    func fillWritesEveryElementAndNothingElse(count: Int) throws {
        let output = try PoisonedOutput(on: device, count: count)
        try device.fill(output.tensor, value: -2.5)
        #expect(try output.values(from: device).allSatisfy { $0 == -2.5 })
    }

    @Test(arguments: counts)
    func axpyMatchesHost(count: Int) throws {
        var generator = SplitMix64(seed: UInt64(count))
        let x = randomValues(count + 3, in: -10...10, using: &generator)
        let y = randomValues(count, in: -10...10, using: &generator)
        // x is read from an offset view; y carries a canary tail.
        let xDevice = try device.makeTensor(x, shape: [x.count]).view(offset: 3, shape: [count])
        let output = try PoisonedOutput(on: device, count: count, initial: y)
        try device.axpy(alpha: 0.75, x: xDevice, y: output.tensor)

        let xHost = try host.makeTensor(x, shape: [x.count]).view(offset: 3, shape: [count])
        let yHost = try host.makeTensor(y, shape: [count])
        try host.axpy(alpha: 0.75, x: xHost, y: yHost)
        expectClose(try output.values(from: device), try host.download(yHost), relative: 1e-6, absolute: 1e-6,
                    "axpy n=\(count)")
    }

    @Test func axpyRejectsMismatchedCounts() throws {
        let x = try device.makeTensor(shape: [4]), y = try device.makeTensor(shape: [5])
        #expect(throws: BackendError.self) { try device.axpy(alpha: 1, x: x, y: y) }
    }

    /// The benchmarks' bandwidth ceiling (`clEnqueueCopyBuffer`): exact, honours both offsets,
    /// writes nothing past the destination.
    @Test(arguments: [7, 16_640 * 3 + 1])
    func copyMovesEveryElementAndNothingElse(count: Int) throws {
        var generator = SplitMix64(seed: UInt64(count) + 9)
        let x = randomValues(count + 5, using: &generator)
        let source = try device.makeTensor(x, shape: [x.count]).view(offset: 5, shape: [count])
        let whole = try device.makeTensor([Float](repeating: .nan, count: count + 2 + PoisonedBuffer.canaryCount),
                                          shape: [count + 2 + PoisonedBuffer.canaryCount])
        try device.copy(from: source, to: whole.view(offset: 2, shape: [count]))
        let result = try device.download(whole)
        #expect(Array(result[2..<(count + 2)]) == Array(x[5...]))
        #expect(result[0].isNaN && result[1].isNaN && result[(count + 2)...].allSatisfy(\.isNaN))
        #expect(throws: BackendError.self) { try device.copy(from: source, to: whole.view(shape: [count + 1])) }
    }
}
