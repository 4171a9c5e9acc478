import Foundation
import Testing
@testable import Datasets

@Suite struct CIFARDatasetTests {
    static let plane = 32 * 32

    /// One record: the label byte(s), then the R, G and B planes.
    static func record(labels: [UInt8], random: inout TestBytes) -> (bytes: [UInt8], planes: [UInt8]) {
        let planes = random.bytes(3 * plane)
        return (labels + planes, planes)
    }

    /// The HWC pixel the reader must produce for (x, y, channel) of a record's CHW planes.
    static func expectHWC(_ image: Image, planes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(image.width == 32 && image.height == 32 && image.channels == 3, sourceLocation: sourceLocation)
        var mismatches = 0
        for y in 0..<32 {
            for x in 0..<32 {
                for channel in 0..<3 where image.pixels[(y * 32 + x) * 3 + channel] != planes[channel * plane + y * 32 + x] {
                    mismatches += 1
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) pixels differ from the CHW source", sourceLocation: sourceLocation)
    }

    @Test func cifar10PlanesBecomeInterleavedRGB() throws {
        let directory = try TemporaryDirectory()
        var random = TestBytes(seed: 10)
        var expected: [(label: Int, planes: [UInt8])] = []
        for batch in 1...5 {
            var file: [UInt8] = []
            for index in 0..<2 {
                let label = UInt8((batch * 2 + index) % 10)
                let (bytes, planes) = Self.record(labels: [label], random: &random)
                file += bytes
                expected.append((Int(label), planes))
            }
            try directory.write(file, to: "data_batch_\(batch).bin")
        }
        let (testBytes, testPlanes) = Self.record(labels: [4], random: &random)
        try directory.write(testBytes, to: "test_batch.bin")
        let names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        try directory.write(Array((names.joined(separator: "\n") + "\n\n").utf8), to: "batches.meta.txt")

        let train = try CIFARDataset(directory: directory.path, split: .train)
        #expect(train.variant == .cifar10)
        #expect(train.count == 10)
        #expect(train.classNames == names)
        for (index, sample) in expected.enumerated() {
            #expect(train.label(at: index) == sample.label)
            Self.expectHWC(try train.image(at: index), planes: sample.planes)
        }
        let test = try CIFARDataset(directory: directory.path, split: .test)
        #expect(test.count == 1 && test.label(at: 0) == 4)
        Self.expectHWC(try test.image(at: 0), planes: testPlanes)
    }

    @Test func cifar100UsesTheFineLabel() throws {
        let directory = try TemporaryDirectory()
        var random = TestBytes(seed: 100)
        var file: [UInt8] = []
        var expected: [(fine: Int, planes: [UInt8])] = []
        for (coarse, fine) in [(3, 77), (19, 5), (0, 99)] as [(UInt8, UInt8)] {
            let (bytes, planes) = Self.record(labels: [coarse, fine], random: &random)
            file += bytes
            expected.append((Int(fine), planes))
        }
        try directory.write(file, to: "train.bin")
        let dataset = try CIFARDataset(directory: directory.path, split: .train)
        #expect(dataset.variant == .cifar100)
        #expect(dataset.count == 3)
        #expect(dataset.classNames == (0..<100).map(String.init))
        for (index, sample) in expected.enumerated() {
            #expect(dataset.label(at: index) == sample.fine)
            Self.expectHWC(try dataset.image(at: index), planes: sample.planes)
        }
    }

    @Test func sizeThatIsNotWholeRecordsNamesTheFile() throws {
        let directory = try TemporaryDirectory()
        try directory.write([UInt8](repeating: 1, count: 3073 * 2 - 1), to: "test_batch.bin")
        expectDatasetError(containing: [directory.path + "/test_batch.bin", "6145 bytes", "3073-byte"]) {
            _ = try CIFARDataset(directory: directory.path, split: .test)
        }
    }

    @Test func missingBatchNamesTheFile() throws {
        let directory = try TemporaryDirectory()
        try directory.write([UInt8](repeating: 1, count: 3073), to: "data_batch_1.bin")
        expectDatasetError(containing: [directory.path + "/data_batch_2.bin", "missing"]) {
            _ = try CIFARDataset(directory: directory.path, split: .train)
        }
    }
}
