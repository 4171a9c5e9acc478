import COpenBLAS
import Dispatch
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

    /// Predicted classes of `queries` (count, width) against a bank (bankCount, width) with
    /// `bankLabels`; both sets must already be L2-normalised. Labels < 0 in the bank are ignored
    /// (unfilled slots). Queries are processed in blocks on all cores.
    public func predict(queries: [Float], bank: [Float], bankLabels: [Int32], width: Int) -> [Int32] {
        let queryCount = queries.count / width
        let bankCount = bankLabels.count
        precondition(bank.count == bankCount * width, "bank size does not match its labels")
        guard queryCount > 0 else { return [] }
        guard bankCount > 0 else { return [Int32](repeating: -1, count: queryCount) }
        let block = 128
        let blocks = (queryCount + block - 1) / block
        var predictions = [Int32](repeating: -1, count: queryCount)
        let neighbours = min(k, bankCount)
        predictions.withUnsafeMutableBufferPointer { output in
            let output = UncheckedSendable(output)
            queries.withUnsafeBufferPointer { q in
                bank.withUnsafeBufferPointer { f in
                    let (q, f) = (UncheckedSendable(q), UncheckedSendable(f))
                    // Each block runs its own GEMMs: OpenBLAS's shared pool would serialize them.
                    HostParallel.withSingleThreadedBLAS {
                    DispatchQueue.concurrentPerform(iterations: blocks) { blockIndex in
                        let first = blockIndex * block
                        let rows = min(block, queryCount - first)
                        // The bank is visited in tiles, each row keeping a running top-k, so memory stays
                        // rows × tile whatever the bank's size (ImageNet: 1.28 M features).
                        let tile = min(bankCount, 16384)
                        var tops = (0..<rows).map { _ in TopK(capacity: neighbours) }
                        var similarities = [Float](repeating: 0, count: rows * tile)
                        similarities.withUnsafeMutableBufferPointer { s in
                            for start in stride(from: 0, to: bankCount, by: tile) {
                                let columns = min(tile, bankCount - start)
                                // S (rows, columns) = Q_block · F_tileᵀ
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(columns),
                                            Int32(width), 1, q.value.baseAddress! + first * width, Int32(width),
                                            f.value.baseAddress! + start * width, Int32(width), 0, s.baseAddress!,
                                            Int32(columns))
                                for row in 0..<rows {
                                    let base = row * columns
                                    for column in 0..<columns where bankLabels[start + column] >= 0 {
                                        tops[row].insert(s[base + column], start + column)
                                    }
                                }
                            }
                        }
                        var votes = [Double](repeating: 0, count: classes)
                        for row in 0..<rows {
                            for index in votes.indices { votes[index] = 0 }
                            for (similarity, column) in tops[row].items {
                                votes[Int(bankLabels[column])] += exp(Double(similarity) / temperature)
                            }
                            var best = 0
                            for c in 1..<max(classes, 1) where votes[c] > votes[best] { best = c }
                            output.value[first + row] = tops[row].items.isEmpty ? -1 : Int32(best)
                        }
                    }
                    }
                }
            }
        }
        return predictions
    }

    /// Top-1 accuracy in [0, 1] of `predict` against `labels`.
    public func accuracy(queries: [Float], labels: [Int32], bank: [Float], bankLabels: [Int32], width: Int) -> Double {
        let predicted = predict(queries: queries, bank: bank, bankLabels: bankLabels, width: width)
        guard !predicted.isEmpty else { return 0 }
        let correct = zip(predicted, labels).filter { $0 == $1 }.count
        return Double(correct) / Double(predicted.count)
    }
}

/// The `capacity` largest (value, index) pairs seen, as a min-heap on value.
struct TopK {
    let capacity: Int
    private(set) var items: [(Float, Int)] = []

    init(capacity: Int) {
        self.capacity = capacity
        items.reserveCapacity(capacity)
    }

    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    mutating func insert(_ value: Float, _ index: Int) {
        if items.count < capacity {
            items.append((value, index))
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard items[child].0 < items[parent].0 else { break }
                items.swapAt(child, parent)
                child = parent
            }
        } else if value > items[0].0 {
            items[0] = (value, index)
            var parent = 0
            while true {
                let (left, right) = (2 * parent + 1, 2 * parent + 2)
                var smallest = parent
                if left < items.count, items[left].0 < items[smallest].0 { smallest = left }
                if right < items.count, items[right].0 < items[smallest].0 { smallest = right }
                guard smallest != parent else { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
    }
}

/// Hands a pointer to `concurrentPerform` workers that write disjoint parts of it.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
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

    /// Enqueues rows (count, width), normalising them, overwriting the oldest slots.
    public mutating func enqueue(_ rows: [Float], labels newLabels: [Int32]) {
        let normalized = KNNClassifier.normalized(rows, width: width)
        for (row, label) in newLabels.enumerated() where label >= 0 {
            features.replaceSubrange(pointer * width..<(pointer + 1) * width,
                                     with: normalized[(row * width)..<((row + 1) * width)])
            labels[pointer] = label
            pointer = (pointer + 1) % length
        }
    }
}
