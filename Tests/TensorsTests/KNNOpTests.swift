import Foundation
import Tensors
import Testing
import TestSupport

/// The host kNN ops (the reference of kernels/cl/knn.cl) against a brute force written here: sort
/// each row's (similarity, column) pairs of filled bank slots by similarity, descending and stable
/// by column, keep k, vote in Double.
@Suite struct KNNOpTests {
    let host = HostBackend()

    /// The k nearest of each row and the winning class, by sorting.
    static func bruteForce(similarities: [Float], rows: Int, bank: Int, labels: [Int32], k: Int, classes: Int,
                           temperature: Float) -> (kept: [[(value: Float, column: Int)]], predictions: [Int32]) {
        var kept: [[(value: Float, column: Int)]] = [], predictions: [Int32] = []
        for row in 0..<rows {
            var pairs = (0..<bank).filter { labels[$0] >= 0 }.map { (value: similarities[row * bank + $0], column: $0) }
            pairs.sort { $0.value > $1.value || ($0.value == $1.value && $0.column < $1.column) }
            let top = Array(pairs.prefix(k))
            var votes = [Double](repeating: 0, count: classes), present = [Bool](repeating: false, count: classes)
            for pair in top {
                let label = Int(labels[pair.column])
                votes[label] += exp(Double(pair.value) / Double(temperature))
                present[label] = true
            }
            var best = -1
            for c in 0..<classes where present[c] && (best < 0 || votes[c] > votes[best]) { best = c }
            kept.append(top)
            predictions.append(Int32(best))
        }
        return (kept, predictions)
    }

    /// Reset, one `knnTopK` per tile, vote: (values, indices, predictions).
    func run(similarities: [Float], rows: Int, bank: Int, labels: [Int32], k: Int, tile: Int, classes: Int,
             temperature: Float) throws -> (values: [Float], indices: [Int32], predictions: [Int32]) {
        let values = try host.makeTensor(shape: [rows, k])
        let indices = try host.makeTensor(shape: [rows, k], dtype: .int32)
        let predictions = try host.makeTensor(shape: [rows], dtype: .int32)
        let bankLabels = try host.makeTensor(labels, shape: [bank])
        try host.knnTopKReset(values: values, indices: indices)
        for start in stride(from: 0, to: bank, by: tile) {
            let columns = min(tile, bank - start)
            var tileValues = [Float]()
            for row in 0..<rows { tileValues += similarities[(row * bank + start)..<(row * bank + start + columns)] }
            try host.knnTopK(values: values, indices: indices,
                             similarities: host.makeTensor(tileValues, shape: [rows, columns]),
                             bankLabels: bankLabels, columnOffset: start)
        }
        try host.knnVote(predictions: predictions, values: values, indices: indices, bankLabels: bankLabels,
                         classes: classes, temperature: temperature)
        var keptIndices = [Int32](repeating: 0, count: rows * k), predicted = [Int32](repeating: 0, count: rows)
        try keptIndices.withUnsafeMutableBytes { try host.download(indices, intoBytes: $0) }
        try predicted.withUnsafeMutableBytes { try host.download(predictions, intoBytes: $0) }
        return (try host.download(values), keptIndices, predicted)
    }

    /// Each row's heap is a min-heap of (similarity, column) pairs taken from that row of filled
    /// columns, its empty slots (−∞, −1) exactly the ones k leaves over.
    func expectWellFormedHeaps(values: [Float], indices: [Int32], similarities: [Float], rows: Int, bank: Int,
                               labels: [Int32], k: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let filled = labels.filter { $0 >= 0 }.count
        for row in 0..<rows {
            let heap = row * k
            for slot in 0..<k {
                let (value, column) = (values[heap + slot], Int(indices[heap + slot]))
                if slot > 0 && values[heap + (slot - 1) / 2] > value {
                    Issue.record("row \(row): slot \(slot) is below its parent", sourceLocation: sourceLocation)
                }
                if column < 0 {
                    if value != -.infinity {
                        Issue.record("row \(row): empty slot \(slot) holds \(value)", sourceLocation: sourceLocation)
                    }
                } else if labels[column] < 0 || similarities[row * bank + column] != value {
                    Issue.record("row \(row): slot \(slot) keeps (\(value), \(column)), not a filled column's pair",
                                 sourceLocation: sourceLocation)
                }
            }
            let empty = (0..<k).filter { indices[heap + $0] < 0 }.count
            if empty != k - min(k, filled) {
                Issue.record("row \(row): \(empty) empty slots for \(filled) filled columns and k \(k)",
                             sourceLocation: sourceLocation)
            }
        }
    }

    /// [rows, bank, tile, k, classes]: several tiles with a ragged last one; k above the filled
    /// columns; one tile.
    @Test(arguments: [[37, 1000, 300, 20, 7], [5, 33, 10, 40, 3], [3, 64, 64, 8, 10]])
    func matchesBruteForceWithoutTies(sizes: [Int]) throws {
        let (rows, bank, tile, k, classes) = (sizes[0], sizes[1], sizes[2], sizes[3], sizes[4])
        var generator = SplitMix64(seed: UInt64(rows * 1000 + bank))
        let labels = (0..<bank).map { $0 % 5 == 2 ? -1 : Int32.random(in: 0..<Int32(classes), using: &generator) }
        // Distinct similarities in (−1, 1) per row: a shuffled grid, so the top k is unique.
        var similarities = [Float]()
        for _ in 0..<rows {
            similarities += Array(0..<bank).shuffled(using: &generator).map { Float(2 * $0 + 1) / Float(bank) - 1 }
        }
        let result = try run(similarities: similarities, rows: rows, bank: bank, labels: labels, k: k, tile: tile,
                             classes: classes, temperature: 0.07)
        let reference = Self.bruteForce(similarities: similarities, rows: rows, bank: bank, labels: labels, k: k,
                                        classes: classes, temperature: 0.07)
        expectWellFormedHeaps(values: result.values, indices: result.indices, similarities: similarities, rows: rows,
                              bank: bank, labels: labels, k: k)
        #expect(result.predictions == reference.predictions)
        for row in 0..<rows {
            let heap = (0..<k).filter { result.indices[row * k + $0] >= 0 }
                .map { Int(result.indices[row * k + $0]) }.sorted()
            #expect(heap == reference.kept[row].map { $0.column }.sorted(), "row \(row): kept columns")
        }
    }

    @Test(arguments: [[40, 500, 128, 20], [7, 33, 10, 5]])
    func keepsTheTopValuesWithTies(sizes: [Int]) throws {
        let (rows, bank, tile, k) = (sizes[0], sizes[1], sizes[2], sizes[3])
        var generator = SplitMix64(seed: UInt64(90 + rows))
        let labels = (0..<bank).map { $0 % 11 == 4 ? -1 : Int32.random(in: 0..<10, using: &generator) }
        let levels: [Float] = [0.25, 0.5, 0.75, 1]
        let similarities = (0..<(rows * bank)).map { _ in levels[Int.random(in: 0..<levels.count, using: &generator)] }
        let result = try run(similarities: similarities, rows: rows, bank: bank, labels: labels, k: k, tile: tile,
                             classes: 10, temperature: 0.07)
        let reference = Self.bruteForce(similarities: similarities, rows: rows, bank: bank, labels: labels, k: k,
                                        classes: 10, temperature: 0.07)
        expectWellFormedHeaps(values: result.values, indices: result.indices, similarities: similarities, rows: rows,
                              bank: bank, labels: labels, k: k)
        for row in 0..<rows {
            let kept = Array(result.values[(row * k)..<((row + 1) * k)]).sorted()
            #expect(kept == reference.kept[row].map { $0.value }.sorted(), "row \(row): kept values")
            #expect((0..<10).contains(Int(result.predictions[row])), "row \(row): prediction")
        }
    }

    @Test func unfilledBankAndBadLabels() throws {
        // No filled slot: every prediction is −1.
        let empty = try run(similarities: [0.5, -0.25, 0.75, 0.1, 0.2, 0.3], rows: 2, bank: 3, labels: [-1, -1, -1],
                            k: 2, tile: 2, classes: 4, temperature: 0.07)
        #expect(empty.predictions == [-1, -1])
        #expect(empty.indices == [-1, -1, -1, -1])
        // A kept label outside [0, classes) is rejected before any prediction is written.
        let error = #expect(throws: BackendError.self) {
            _ = try run(similarities: [0.5, 0.9], rows: 1, bank: 2, labels: [0, 5], k: 2, tile: 2, classes: 3,
                        temperature: 0.07)
        }
        #expect("\(error!)".contains("outside [0, 3)"))
    }
}
