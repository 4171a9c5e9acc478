import Datasets
import Foundation
import Testing
@testable import Augment

@Suite struct LoaderTests {
    let augmentation = MoCoAugmentation(imageSize: 4, cropMin: 0.2)

    func allBatches(_ loader: TrainingBatches) throws -> [TrainingBatch] {
        var batches: [TrainingBatch] = []
        while let batch = try loader.next() { batches.append(batch) }
        return batches
    }

    func loader(_ dataset: MemoryDataset, batchSize: Int = 5, seed: UInt64 = 1, epoch: Int = 0,
                startBatch: Int = 0, workers: Int = 1) -> TrainingBatches {
        TrainingBatches(dataset: dataset, augmentation: augmentation, batchSize: batchSize, seed: seed,
                        epoch: epoch, startBatch: startBatch, workers: workers)
    }

    @Test func epochDropsLastAndRepeatsNothing() throws {
        let dataset = MemoryDataset(count: 23)
        let batches = try allBatches(loader(dataset))
        #expect(batches.count == 4)
        #expect(batches.map(\.batchIndex) == [0, 1, 2, 3])
        let indices = batches.flatMap(\.indices)
        #expect(indices.count == 20)
        #expect(Set(indices).count == 20)
        #expect(indices.allSatisfy { (0..<23).contains($0) })
        for batch in batches {
            #expect(batch.x1.count == 5 * 3 * 4 * 4 && batch.x2.count == batch.x1.count)
            #expect(batch.labels == batch.indices.map { Int32($0 % 10) })
        }
    }

    @Test func workersDoNotChangeBatches() throws {
        let dataset = MemoryDataset(count: 23)
        let one = try allBatches(loader(dataset, workers: 1))
        let two = try allBatches(loader(dataset, workers: 2))
        let three = try allBatches(loader(dataset, workers: 3))
        for (a, others) in zip(one, zip(two, three)) {
            for b in [others.0, others.1] {
                #expect(a.x1 == b.x1 && a.x2 == b.x2 && a.indices == b.indices && a.labels == b.labels)
            }
        }
    }

    @Test func startingAtBatchMatchesIterating() throws {
        let dataset = MemoryDataset(count: 23)
        let full = try allBatches(loader(dataset))
        let resumed = try allBatches(loader(dataset, startBatch: 2, workers: 2))
        #expect(resumed.map(\.batchIndex) == [2, 3])
        for (a, b) in zip(full[2...], resumed) {
            #expect(a.x1 == b.x1 && a.x2 == b.x2 && a.indices == b.indices)
        }
    }

    @Test func epochsAndSeedsChangeOrder() throws {
        let dataset = MemoryDataset(count: 40)
        let first = try allBatches(loader(dataset, epoch: 0)).flatMap(\.indices)
        let second = try allBatches(loader(dataset, epoch: 1)).flatMap(\.indices)
        let otherSeed = try allBatches(loader(dataset, seed: 2, epoch: 0)).flatMap(\.indices)
        #expect(first != second)
        #expect(first != otherSeed)
        #expect(first != Array(0..<40))
        #expect(Set(first) == Set(second))
    }

    @Test func unreadableSampleIsReplacedAndLogged() throws {
        let dataset = MemoryDataset(count: 10, failing: [3])
        let loader = loader(dataset, batchSize: 10, workers: 2)
        let batches = try allBatches(loader)
        #expect(batches.count == 1)
        let indices = batches[0].indices
        #expect(indices.count == 10)
        #expect(!indices.contains(3))
        #expect(Set(indices).count == 9)
        #expect(loader.skippedSamples == 1)
        #expect(loader.errorDescriptions.count == 1)
        #expect(loader.errorDescriptions.first?.contains("img3.png") == true)
        // The replacement is the next permutation entry, and the result is still deterministic.
        let position = loader.permutation.firstIndex(of: 3)!
        #expect(indices[position] == loader.permutation[(position + 1) % 10])
        let again = try allBatches(self.loader(dataset, batchSize: 10, workers: 1))
        #expect(again[0].x1 == batches[0].x1 && again[0].indices == indices)
    }

    @Test func unreadableDatasetThrows() {
        let dataset = MemoryDataset(count: 4, failing: [0, 1, 2, 3])
        let loader = loader(dataset, batchSize: 2)
        #expect(throws: DatasetError.self) { _ = try loader.next() }
    }

    @Test func unlabeledSamplesHaveLabelMinusOne() throws {
        let dataset = MemoryDataset(count: 6, channels: 1, labeled: false)
        let batch = try #require(try loader(dataset, batchSize: 3).next())
        #expect(batch.labels == [-1, -1, -1])
    }

    @Test(.timeLimit(.minutes(1))) func cancelStopsProducer() throws {
        let dataset = MemoryDataset(count: 400, width: 32, height: 32)
        let loader = loader(dataset, batchSize: 4, workers: 2)
        _ = try loader.next()
        loader.cancel()
        #expect(loader.isProducerStopped)
        #expect(try loader.next() == nil)
        // Dropping a loader mid-epoch returns (deinit cancels and joins the producer).
        for _ in 0..<5 {
            let dropped = self.loader(dataset, batchSize: 4, workers: 2)
            _ = try dropped.next()
        }
    }

    @Test func evalBatchesKeepOrderAndPartialBatch() throws {
        let dataset = MemoryDataset(count: 23, width: 28, height: 28, channels: 1)
        let loader = EvalBatches(dataset: dataset, transform: EvalTransform(imageSize: 28), batchSize: 5, workers: 2)
        var batches: [EvalBatch] = []
        while let batch = try loader.next() { batches.append(batch) }
        #expect(batches.map(\.indices.count) == [5, 5, 5, 5, 3])
        #expect(batches.flatMap(\.indices) == Array(0..<23))
        #expect(batches.flatMap(\.labels) == (0..<23).map { Int32($0 % 10) })
        #expect(batches[4].x.count == 3 * 3 * 28 * 28)
        #expect(Array(batches[1].x[0..<(3 * 28 * 28)]) == EvalTransform(imageSize: 28)(dataset.images[5]))
    }

    @Test func evalBatchesLeaveOutUnreadableSamples() throws {
        let dataset = MemoryDataset(count: 6, width: 8, height: 8, failing: [2])
        let loader = EvalBatches(dataset: dataset, transform: EvalTransform(imageSize: 8), batchSize: 4, workers: 1)
        let first = try #require(try loader.next())
        #expect(first.indices == [0, 1, 3])
        #expect(first.x.count == 3 * 3 * 8 * 8)
        #expect(Array(first.x[(2 * 192)..<(3 * 192)]) == EvalTransform(imageSize: 8)(dataset.images[3]))
        #expect(loader.skippedSamples == 1)
    }
}
