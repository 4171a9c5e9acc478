import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/knn.cl against the host backend. The heap and the vote are the same algorithm on
/// both, so the kept (value, column) pairs, their slots and the predictions must match exactly,
/// ties included.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct KNNTests {
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    /// Similarity levels for the tie cases: with T = 1/8 they give s/T ∈ {3, 3.25, 3.75, 6.75, 8, 8.5},
    /// whose exact exponentials lie within 0.06 ulp of a double, so any libm rounds them alike and
    /// equal class totals stay equal on both backends.
    static let tieLevels: [Float] = [0.375, 0.40625, 0.46875, 0.84375, 1.0, 1.0625]

    @Test func realSizesMatchHost() throws {
        // 256 queries against a 6000-sample bank in tiles of 2048 (the last one ragged), k 200 as
        // InstDisc, 10 classes, every 13th bank slot unfilled.
        var generator = SplitMix64(seed: 41)
        let bank = 6000
        let labels = (0..<bank).map { $0 % 13 == 5 ? -1 : Int32.random(in: 0..<10, using: &generator) }
        let similarities = randomValues(256 * bank, using: &generator)
        let knn = KNNCase(rows: 256, bank: bank, k: 200, tile: 2048, classes: 10, temperature: 0.07,
                          similarities: similarities, labels: labels)
        try expectSameAsHost(knn, "real sizes")
    }

    @Test(arguments: [5, 40])
    func oddSizesMatchHost(k: Int) throws {
        // 7 rows, 33 columns in tiles of 10 (10, 10, 10, 3); k 40 exceeds the 33 columns and the
        // 22 filled ones, so some slots stay empty.
        var generator = SplitMix64(seed: UInt64(50 + k))
        let labels = (0..<33).map { $0 % 3 == 1 ? -1 : Int32.random(in: 0..<10, using: &generator) }
        let knn = KNNCase(rows: 7, bank: 33, k: k, tile: 10, classes: 10, temperature: 0.07,
                          similarities: randomValues(7 * 33, using: &generator), labels: labels)
        try expectSameAsHost(knn, "odd sizes, k \(k)")
    }

    @Test func emptyBankPredictsMinusOne() throws {
        var generator = SplitMix64(seed: 60)
        let knn = KNNCase(rows: 7, bank: 33, k: 5, tile: 10, classes: 10, temperature: 0.07,
                          similarities: randomValues(7 * 33, using: &generator),
                          labels: [Int32](repeating: -1, count: 33))
        let result = try expectSameAsHost(knn, "unfilled bank")
        #expect(result.predictions == [Int32](repeating: -1, count: 7))
        #expect(result.indices.allSatisfy { $0 == -1 } && result.values.allSatisfy { $0 == -.infinity })
    }

    /// [rows, bank, tile, k].
    @Test(arguments: [[64, 500, 128, 20], [7, 33, 10, 5]])
    func tiesMatchHost(sizes: [Int]) throws {
        let (rows, bank, tile, k) = (sizes[0], sizes[1], sizes[2], sizes[3])
        // Few distinct similarities, the top ones rare, so the k-th largest value is tied across
        // many columns and tiles and the kept set spans several levels.
        var generator = SplitMix64(seed: UInt64(70 + rows))
        let labels = (0..<bank).map { $0 % 11 == 4 ? -1 : Int32.random(in: 0..<10, using: &generator) }
        let similarities = (0..<(rows * bank)).map { _ -> Float in
            let u = Float.random(in: 0..<1, using: &generator)
            let level = u < 0.01 ? 5 : u < 0.03 ? 4 : u < 0.06 ? 3 : Int(u * 3) % 3
            return Self.tieLevels[level]
        }
        let knn = KNNCase(rows: rows, bank: bank, k: k, tile: tile, classes: 10, temperature: 0.125,
                          similarities: similarities, labels: labels)
        try expectSameAsHost(knn, "ties \(rows)×\(bank), k \(k)")
    }

    @Test func badShapesAreRejected() throws {
        let host = HostBackend()
        for backend in [device, host] as [any Backend] {
            let values = try backend.makeTensor(shape: [2, 3])
            let indices = try backend.makeTensor(shape: [2, 3], dtype: .int32)
            let labels = try backend.makeTensor([0, 1, 2, 3] as [Int32], shape: [4])
            let similarities = try backend.makeTensor(shape: [2, 3])
            #expect(throws: BackendError.self) {
                try backend.knnTopKReset(values: values, indices: backend.makeTensor(shape: [2, 4], dtype: .int32))
            }
            #expect(throws: BackendError.self) {
                try backend.knnTopK(values: values, indices: indices, similarities: backend.makeTensor(shape: [3, 3]),
                                    bankLabels: labels, columnOffset: 0)
            }
            #expect(throws: BackendError.self) {
                try backend.knnTopK(values: values, indices: indices, similarities: similarities, bankLabels: labels,
                                    columnOffset: 2)
            }
            #expect(throws: BackendError.self) {
                try backend.knnTopK(values: values, indices: indices, similarities: similarities,
                                    bankLabels: backend.makeTensor(shape: [4]), columnOffset: 0)
            }
            #expect(throws: BackendError.self) {
                try backend.knnVote(predictions: backend.makeTensor(shape: [3], dtype: .int32), values: values,
                                    indices: indices, bankLabels: labels, classes: 4, temperature: 0.07)
            }
            #expect(throws: BackendError.self) {
                try backend.knnVote(predictions: backend.makeTensor(shape: [2], dtype: .int32), values: values,
                                    indices: indices, bankLabels: labels, classes: 0, temperature: 0.07)
            }
        }
    }

    /// Runs `knn` on the device and on the host and requires identical outputs; returns the host's.
    @discardableResult
    func expectSameAsHost(_ knn: KNNCase, _ context: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws -> KNNResult {
        let expected = try knn.run(on: HostBackend(), sourceLocation: sourceLocation)
        let actual = try knn.run(on: device, sourceLocation: sourceLocation)
        expectIdentical(actual.values, expected.values, "\(context): heap values", sourceLocation: sourceLocation)
        expectIdentical(actual.indices, expected.indices, "\(context): heap indices", sourceLocation: sourceLocation)
        expectIdentical(actual.predictions, expected.predictions, "\(context): predictions",
                        sourceLocation: sourceLocation)
        return expected
    }
}

/// One classification as `KNNClassifier` drives the ops: reset the heaps, merge the bank tile by
/// tile, vote.
struct KNNCase {
    let rows: Int
    let bank: Int
    let k: Int
    let tile: Int
    let classes: Int
    let temperature: Float
    /// (rows, bank).
    let similarities: [Float]
    /// (bank); negative for unfilled slots.
    let labels: [Int32]

    /// The outputs after the vote, from NaN-poisoned buffers whose canary tails are checked.
    func run(on backend: any Backend, sourceLocation: SourceLocation) throws -> KNNResult {
        let values = try PoisonedOutput(on: backend, count: rows * k)
        let indices = try PoisonedOutput(on: backend, count: rows * k, dtype: .int32)
        let predictions = try PoisonedOutput(on: backend, count: rows, dtype: .int32)
        let heapValues = values.tensor.reshaped([rows, k]), heapIndices = indices.tensor.reshaped([rows, k])
        let bankLabels = try backend.makeTensor(labels, shape: [bank])
        let tileBuffer = try backend.makeTensor(shape: [rows * tile])
        try backend.knnTopKReset(values: heapValues, indices: heapIndices)
        for start in stride(from: 0, to: bank, by: tile) {
            let columns = min(tile, bank - start)
            var tileValues = [Float]()
            tileValues.reserveCapacity(rows * columns)
            for row in 0..<rows {
                tileValues += similarities[(row * bank + start)..<(row * bank + start + columns)]
            }
            let tileSimilarities = tileBuffer.view(shape: [rows, columns])
            try backend.upload(tileValues, to: tileSimilarities)
            try backend.knnTopK(values: heapValues, indices: heapIndices, similarities: tileSimilarities,
                                bankLabels: bankLabels, columnOffset: start)
        }
        try backend.knnVote(predictions: predictions.tensor, values: heapValues, indices: heapIndices,
                            bankLabels: bankLabels, classes: classes, temperature: temperature)
        return KNNResult(values: try values.values(from: backend, sourceLocation: sourceLocation),
                         indices: try indices.int32Values(from: backend, sourceLocation: sourceLocation),
                         predictions: try predictions.int32Values(from: backend, sourceLocation: sourceLocation))
    }
}

struct KNNResult {
    let values: [Float]
    let indices: [Int32]
    let predictions: [Int32]
}

/// Records one failure naming the first differing element and how many differ.
func expectIdentical<Element: Equatable>(_ actual: [Element], _ expected: [Element], _ context: String,
                                         sourceLocation: SourceLocation) {
    guard actual.count == expected.count else {
        Issue.record("\(context): got \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    let differing = actual.indices.filter { actual[$0] != expected[$0] }
    if let first = differing.first {
        let message = "\(context): \(differing.count) of \(actual.count) differ; first at \(first): "
            + "got \(actual[first]), expected \(expected[first])"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
}
