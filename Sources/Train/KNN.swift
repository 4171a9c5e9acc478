import Foundation
import Tensors

/// The weighted kNN classifier of InstDisc (Wu et al. 2018), the paper's kNN monitor [45]:
/// cosine similarity between L2-normalised features, the k most similar training samples vote
/// for their class with weight `exp(s / T)`, the class with the largest total wins.
public struct KNNClassifier: Sendable {
    public let k: Int
    public let temperature: Double
    public let classes: Int

    public init(k: Int = 200, temperature: Double = 0.07, classes: Int) {
        self.k = k
        self.temperature = temperature
        self.classes = classes
    }

    /// Rows of `features` (count, width) scaled to unit length (a zero row stays zero).
    public static func normalized(_ features: [Float], width: Int) -> [Float] {
        var result = features
        let rows = features.count / width
        result.withUnsafeMutableBufferPointer { buffer in
            for row in 0..<rows {
                let slice = UnsafeMutableBufferPointer(rebasing: buffer[(row * width)..<((row + 1) * width)])
                var sum: Float = 0
                for value in slice { sum += value * value }
                let scale = sum > 0 ? 1 / sum.squareRoot() : 0
                for index in slice.indices { slice[index] *= scale }
            }
        }
        return result
    }

    /// Queries per block: the similarity tile is (block, tile) floats on the device.
    static let queryBlock = 1024
    /// Bank columns per tile, so memory stays block × tile whatever the bank's size (ImageNet:
    /// 1.28 M features), each row keeping a running top-k across tiles.
    static let bankTile = 16384

    /// Predicted classes of `queries` (count, width) against a bank (bankCount, width) with
    /// `bankLabels`, computed on `backend`: similarities by its `gemm`, the running top-k and the
    /// weighted vote by its `knnTopK`/`knnVote` ops. Both sets must already be L2-normalised.
    /// Labels < 0 in the bank are ignored (unfilled slots); a query with no neighbour gets −1.
    public func predict(queries: [Float], bank: [Float], bankLabels: [Int32], width: Int,
                        on backend: any Backend) throws -> [Int32] {
        precondition(bank.count == bankLabels.count * width && queries.count % width == 0,
                     "features do not match their counts")
        return try predict(queries: backend.makeTensor(queries, shape: [queries.count / width, width]),
                           bank: backend.makeTensor(bank, shape: [bankLabels.count, width]),
                           bankLabels: backend.makeTensor(bankLabels, shape: [bankLabels.count]), on: backend)
    }

    /// As ``predict(queries:bank:bankLabels:width:on:)`` on tensors already on `backend`:
    /// queries (count, width), bank (bankCount, width), int32 bankLabels (bankCount).
    public func predict(queries queryTensor: Tensor, bank bankTensor: Tensor, bankLabels labelTensor: Tensor,
                        on backend: any Backend) throws -> [Int32] {
        let width = bankTensor.shape.last ?? 0
        let (queryCount, bankCount) = (queryTensor.shape.first ?? 0, labelTensor.count)
        precondition(queryTensor.shape.count == 2 && queryTensor.shape[1] == width
                     && bankTensor.shape.count == 2 && bankTensor.shape[0] == bankCount,
                     "queries \(queryTensor.shape), bank \(bankTensor.shape) and \(bankCount) labels do not match")
        guard queryCount > 0 else { return [] }
        guard bankCount > 0 else { return [Int32](repeating: -1, count: queryCount) }
        let neighbours = min(k, bankCount)
        let block = min(Self.queryBlock, queryCount), tile = min(Self.bankTile, bankCount)
        let similarities = try backend.makeTensor(shape: [block, tile])
        let values = try backend.makeTensor(shape: [block, neighbours])
        let indices = try backend.makeTensor(shape: [block, neighbours], dtype: .int32)
        let predictions = try backend.makeTensor(shape: [queryCount], dtype: .int32)
        for first in stride(from: 0, to: queryCount, by: block) {
            let rows = min(block, queryCount - first)
            let (rowValues, rowIndices) = (values.view(offset: 0, shape: [rows, neighbours]),
                                           indices.view(offset: 0, shape: [rows, neighbours]))
            try backend.knnTopKReset(values: rowValues, indices: rowIndices)
            for start in stride(from: 0, to: bankCount, by: tile) {
                let columns = min(tile, bankCount - start)
                // S (rows, columns) = Q_block · F_tileᵀ
                let tileSimilarities = similarities.view(offset: 0, shape: [rows, columns])
                try backend.gemm(GEMMShape(m: rows, n: columns, k: width, transposeB: true), alpha: 1,
                                 a: queryTensor.view(offset: first * width, shape: [rows, width]),
                                 b: bankTensor.view(offset: start * width, shape: [columns, width]),
                                 beta: 0, c: tileSimilarities)
                try backend.knnTopK(values: rowValues, indices: rowIndices, similarities: tileSimilarities,
                                    bankLabels: labelTensor, columnOffset: start)
            }
            try backend.knnVote(predictions: predictions.view(offset: first, shape: [rows]), values: rowValues,
                                indices: rowIndices, bankLabels: labelTensor, classes: classes,
                                temperature: Float(temperature))
        }
        var result = [Int32](repeating: -1, count: queryCount)
        try result.withUnsafeMutableBytes { try backend.download(predictions, intoBytes: $0) }
        return result
    }

    /// Top-1 accuracy in [0, 1] of ``predict(queries:bank:bankLabels:width:on:)`` against `labels`.
    public func accuracy(queries: [Float], labels: [Int32], bank: [Float], bankLabels: [Int32], width: Int,
                         on backend: any Backend) throws -> Double {
        Self.accuracy(try predict(queries: queries, bank: bank, bankLabels: bankLabels, width: width, on: backend),
                      labels: labels)
    }

    /// The fraction of `predicted` equal to `labels` (0 when empty).
    static func accuracy(_ predicted: [Int32], labels: [Int32]) -> Double {
        guard !predicted.isEmpty else { return 0 }
        let correct = zip(predicted, labels).filter { $0 == $1 }.count
        return Double(correct) / Double(predicted.count)
    }
}

/// The paper's dense kNN monitor (appendix): a queue of class-token features of augmented
/// training samples with their labels, 10 % of the dataset long by default, filled every
/// iteration from the momentum encoder, so each new batch's kNN accuracy can be logged with no
/// extra feature extraction and sudden dips show up between the per-epoch evaluations.
public struct MemoryBank: Sendable {
    public let length: Int
    public let width: Int
    /// (length, width), L2-normalised rows.
    public private(set) var features: [Float]
    /// −1 marks a slot not yet filled.
    public private(set) var labels: [Int32]
    /// Next slot to overwrite.
    public private(set) var pointer = 0

    public init(length: Int, width: Int) {
        self.length = length
        self.width = width
        features = [Float](repeating: 0, count: length * width)
        labels = [Int32](repeating: -1, count: length)
    }

    /// Restores a bank saved in a checkpoint.
    public init(features: [Float], labels: [Int32], pointer: Int, width: Int) throws {
        guard features.count == labels.count * width, (0..<max(labels.count, 1)).contains(pointer) else {
            throw PretrainError("the checkpoint's kNN memory bank is inconsistent (\(labels.count) labels, "
                + "\(features.count) values, pointer \(pointer)); start a new run or remove the bank tensors")
        }
        length = labels.count
        self.width = width
        self.features = features
        self.labels = labels
        self.pointer = pointer
    }

    public var filled: Int { labels.count { $0 >= 0 } }

    /// Enqueues rows (count, width), normalising them, overwriting the oldest slots; returns
    /// how many were written (the labeled ones), from the pointer as it was.
    @discardableResult
    public mutating func enqueue(_ rows: [Float], labels newLabels: [Int32]) -> Int {
        let normalized = KNNClassifier.normalized(rows, width: width)
        var written = 0
        for (row, label) in newLabels.enumerated() where label >= 0 {
            written += 1
            features.replaceSubrange(pointer * width..<(pointer + 1) * width,
                                     with: normalized[(row * width)..<((row + 1) * width)])
            labels[pointer] = label
            pointer = (pointer + 1) % length
        }
        return written
    }
}

/// The device copy of a ``MemoryBank`` that the dense monitor classifies against: uploaded
/// whole once, then only the slots each enqueue wrote (a batch's rows, not the whole bank).
final class DeviceMemoryBank {
    /// (length, width) and int32 (length).
    let features: Tensor, labels: Tensor
    let backend: any Backend

    init(_ bank: MemoryBank, backend: any Backend) throws {
        self.backend = backend
        features = try backend.makeTensor(bank.features, shape: [bank.length, bank.width])
        labels = try backend.makeTensor(bank.labels, shape: [bank.length])
    }

    /// Uploads the `count` slots written from `start` (wrapping at the end of the queue).
    func update(from bank: MemoryBank, writtenFrom start: Int, count: Int) throws {
        let count = min(count, bank.length)
        let first = min(count, bank.length - start)
        for (slot, rows) in [(start, first), (0, count - first)] where rows > 0 {
            try bank.features[(slot * bank.width)..<((slot + rows) * bank.width)].withUnsafeBufferPointer {
                try backend.upload($0, to: features.view(offset: slot * bank.width, shape: [rows, bank.width]))
            }
            try bank.labels[slot..<(slot + rows)].withUnsafeBytes {
                try backend.upload(bytes: $0, to: labels.view(offset: slot, shape: [rows]))
            }
        }
    }
}
