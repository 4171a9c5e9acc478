import CZlib
import Foundation
import Testing
import TestSupport
@testable import Datasets

/// Seeded mutation fuzzing of the dataset readers (see TestSupport/Fuzzing.swift): no crash, no
/// hang, every error names the file; and the header bombs (an image declaring 60000 × 60000
/// pixels, IDX counts beyond the file) are refused before anything that large is allocated.
@Suite struct DatasetFuzzTests {
    @Test func imageDecoders() throws {
        let seeds = try [
            TestFiles.png(width: 13, height: 7, channels: 3, pixels: TestFiles.gradient(width: 13, height: 7, channels: 3, seed: 1)),
            TestFiles.png(width: 9, height: 5, channels: 1, pixels: TestFiles.gradient(width: 9, height: 5, channels: 1, seed: 2)),
            TestFiles.png16(width: 4, height: 3, channels: 3, samples: (0..<36).map { UInt16($0 * 1800) }),
            TestFiles.jpeg(width: 16, height: 12, channels: 3, pixels: TestFiles.gradient(width: 16, height: 12, channels: 3, seed: 3)),
            TestFiles.jpeg(width: 11, height: 9, channels: 1, pixels: TestFiles.gradient(width: 11, height: 9, channels: 1, seed: 4)),
        ]
        let report = fuzz("png+jpeg", seeds: seeds, count: FuzzBudget.inputs(6000), mustMention: "fuzz.img") { bytes in
            let image = try ImageDecoder.decode(bytes, path: "fuzz.img")
            #expect(image.pixels.count == image.width * image.height * image.channels)
        }
        #expect(report.accepted > 0 && report.rejected > 0)
    }

    @Test func anImageHeaderDeclaring60000SquaredPixelsIsRefusedBeforeDecoding() throws {
        // PNG: a valid IHDR (its CRC recomputed) declaring 60000 × 60000 RGB.
        var png = TestFiles.png16(width: 4, height: 3, channels: 3, samples: (0..<36).map { UInt16($0) })
        png.replaceSubrange(16..<24, with: TestFiles.bigEndian(60_000) + TestFiles.bigEndian(60_000))
        png[24] = 8
        let crc = png[12..<29].withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) }
        png.replaceSubrange(29..<33, with: TestFiles.bigEndian(Int(crc)))
        expectDatasetError(containing: ["bomb.png", "60000x60000"]) { _ = try ImageDecoder.decode(png, path: "bomb.png") }
        // JPEG: the SOF0 frame's height and width set to 60000.
        var jpeg = try TestFiles.jpeg(width: 8, height: 8, channels: 3, pixels: [UInt8](repeating: 128, count: 192))
        let sof = try #require((0..<(jpeg.count - 1)).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        jpeg.replaceSubrange((sof + 5)..<(sof + 9), with: [0xEA, 0x60, 0xEA, 0x60])
        expectDatasetError(containing: ["bomb.jpg", "60000x60000"]) { _ = try ImageDecoder.decode(jpeg, path: "bomb.jpg") }
    }

    @Test func idxReaders() throws {
        let folder = try TemporaryDirectory()
        let pixels = (0..<(6 * 5 * 4)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let images = TestFiles.idxImages(count: 6, rows: 5, columns: 4, pixels: pixels)
        let labels = TestFiles.idxLabels([0, 1, 2, 3, 4, 5])
        let imagesPath = folder.path + "/fuzz-images-idx3-ubyte", labelsPath = folder.path + "/fuzz-labels-idx1-ubyte"
        try folder.write(labels, to: "fuzz-labels-idx1-ubyte")
        for compressed in [false, true] {
            let report = fuzz("idx images\(compressed ? " (gzip)" : "")", seeds: [images], count: FuzzBudget.inputs(1500),
                              mustMention: "fuzz-") { bytes in
                if compressed { try TestFiles.writeGzip(bytes, to: imagesPath) } else { try Data(bytes).write(to: URL(fileURLWithPath: imagesPath)) }
                _ = try IDXDataset(imagesPath: imagesPath, labelsPath: labelsPath, classNames: (0..<10).map(String.init), name: "fuzz")
            }
            #expect(report.rejected > 0)
        }
        try folder.write(images, to: "fuzz-images-idx3-ubyte")
        let report = fuzz("idx labels", seeds: [labels], count: FuzzBudget.inputs(1500), mustMention: "fuzz-") { bytes in
            try Data(bytes).write(to: URL(fileURLWithPath: labelsPath))
            _ = try IDXDataset(imagesPath: imagesPath, labelsPath: labelsPath, classNames: (0..<10).map(String.init), name: "fuzz")
        }
        #expect(report.rejected > 0)
    }

    @Test func idxCountsBeyondTheFileAreRefusedBeforeAllocation() throws {
        let folder = try TemporaryDirectory()
        // 10 million images of 28 × 28 (7.8 GB, a plausible shape) declared in a 16-byte file, plain and gzip'ed.
        let header = TestFiles.idxImages(count: 10_000_000, rows: 28, columns: 28, pixels: [])
        try folder.write(header, to: "bomb-images")
        try TestFiles.writeGzip(header, to: folder.path + "/bomb-images.gz")
        try folder.write(TestFiles.idxLabels([1]), to: "labels")
        for name in ["bomb-images", "bomb-images.gz"] {
            expectDatasetError(containing: [name, "more than the file can hold"]) {
                _ = try IDXDataset(imagesPath: folder.path + "/" + name, labelsPath: folder.path + "/labels",
                                   classNames: ["a", "b"], name: "bomb")
            }
        }
        try folder.write(TestFiles.bigEndian(0x0801) + TestFiles.bigEndian(0x7FFF_FFFF), to: "bomb-labels")
        try folder.write(TestFiles.idxImages(count: 1, rows: 1, columns: 1, pixels: [3]), to: "images")
        expectDatasetError(containing: ["bomb-labels", "more than the file can hold"]) {
            _ = try IDXDataset(imagesPath: folder.path + "/images", labelsPath: folder.path + "/bomb-labels",
                               classNames: ["a", "b"], name: "bomb")
        }
    }

    @Test func cifarReader() throws {
        let folder = try TemporaryDirectory()
        var record: [UInt8] = []
        for index in 0..<3 { record += [UInt8(index), UInt8(index * 3)] + (0..<3072).map { UInt8(truncatingIfNeeded: $0 &+ index) } }
        try folder.write((0..<100).map { "class\($0)" }.joined(separator: "\n").utf8.map { $0 }, to: "fine_label_names.txt")
        let report = fuzz("cifar", seeds: [record], count: FuzzBudget.inputs(1500), mustMention: "train.bin") { bytes in
            try Data(bytes).write(to: URL(fileURLWithPath: folder.path + "/train.bin"))
            _ = try CIFARDataset(directory: folder.path, split: .train, variant: .cifar100)
        }
        #expect(report.accepted > 0 && report.rejected > 0)
    }
}
