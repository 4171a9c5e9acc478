import Foundation
import Testing
@testable import Datasets

@Suite struct IDXDatasetTests {
    static let rows = 5, columns = 7, count = 6

    /// Writes train images and labels (gzipped unless `compressed` is false) and returns the
    /// pixels and labels written.
    @discardableResult
    static func writeSplit(in directory: TemporaryDirectory, prefix: String = "train", compressed: Bool = true,
                           seed: UInt64 = 1) throws -> (pixels: [UInt8], labels: [UInt8]) {
        var random = TestBytes(seed: seed)
        let pixels = random.bytes(count * rows * columns)
        let labels = (0..<count).map { UInt8(($0 * 3 + 1) % 10) }
        let images = TestFiles.idxImages(count: count, rows: rows, columns: columns, pixels: pixels)
        let labelFile = TestFiles.idxLabels(labels)
        let suffix = compressed ? ".gz" : ""
        let imagesPath = directory.path + "/\(prefix)-images-idx3-ubyte" + suffix
        let labelsPath = directory.path + "/\(prefix)-labels-idx1-ubyte" + suffix
        if compressed {
            try TestFiles.writeGzip(images, to: imagesPath)
            try TestFiles.writeGzip(labelFile, to: labelsPath)
        } else {
            try directory.write(images, to: "\(prefix)-images-idx3-ubyte")
            try directory.write(labelFile, to: "\(prefix)-labels-idx1-ubyte")
        }
        return (pixels, labels)
    }

    static func expectMatches(_ dataset: IDXDataset, pixels: [UInt8], labels: [UInt8]) throws {
        #expect(dataset.count == count)
        #expect(dataset.width == columns && dataset.height == rows)
        let size = rows * columns
        for index in 0..<count {
            let image = try dataset.image(at: index)
            #expect(image.channels == 1 && image.width == columns && image.height == rows)
            #expect(image.pixels == Array(pixels[index * size ..< (index + 1) * size]), "image \(index)")
            #expect(dataset.label(at: index) == Int(labels[index]), "label \(index)")
        }
    }

    @Test func gzippedFilesReadBackExactly() throws {
        let directory = try TemporaryDirectory()
        let (pixels, labels) = try Self.writeSplit(in: directory)
        let dataset = try FashionMNIST.open(directory: directory.path, split: .train)
        try Self.expectMatches(dataset, pixels: pixels, labels: labels)
        #expect(dataset.classNames == FashionMNIST.classNames)
        #expect(dataset.summary.contains("6 images"))
    }

    @Test func uncompressedFilesReadBackExactly() throws {
        let directory = try TemporaryDirectory()
        let (pixels, labels) = try Self.writeSplit(in: directory, prefix: "t10k", compressed: false, seed: 2)
        let dataset = try FashionMNIST.open(directory: directory.path, split: .test)
        try Self.expectMatches(dataset, pixels: pixels, labels: labels)
    }

    @Test func badImagesMagicNamesTheFile() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-images-idx3-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.idxImages(count: 1, rows: 2, columns: 2, pixels: [1, 2, 3, 4], magic: 0x0801), to: path)
        expectDatasetError(containing: [path, "0x00000801", "0x00000803"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func badLabelsMagicNamesTheFile() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-labels-idx1-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2, 3, 4, 5, 6], magic: 0x0803), to: path)
        expectDatasetError(containing: [path, "magic"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func truncatedPixelsNameTheFile() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-images-idx3-ubyte.gz"
        let pixels = [UInt8](repeating: 7, count: Self.count * Self.rows * Self.columns - 3)
        try TestFiles.writeGzip(TestFiles.idxImages(count: Self.count, rows: Self.rows, columns: Self.columns, pixels: pixels), to: path)
        expectDatasetError(containing: [path, "truncated"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func bytesAfterTheDeclaredImagesAreRejected() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-images-idx3-ubyte.gz"
        let pixels = [UInt8](repeating: 7, count: Self.count * Self.rows * Self.columns + 1)
        try TestFiles.writeGzip(TestFiles.idxImages(count: Self.count, rows: Self.rows, columns: Self.columns, pixels: pixels), to: path)
        expectDatasetError(containing: [path, "bytes after the 6 images"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    /// A gzip stream whose compressed bytes were damaged: zlib's error reaches the message.
    @Test func corruptGzipStreamNamesTheFile() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-images-idx3-ubyte.gz"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        for index in 12..<bytes.count - 8 { bytes[index] ^= 0x5A }
        try directory.write(bytes, to: "train-images-idx3-ubyte.gz")
        expectDatasetError(containing: [path]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func countMismatchNamesBothFiles() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-labels-idx1-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2, 3, 4, 5]), to: path)
        expectDatasetError(containing: [path, "6 images", "5 labels"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func labelOutOfRangeIsRejected() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        let path = directory.path + "/train-labels-idx1-ubyte.gz"
        try TestFiles.writeGzip(TestFiles.idxLabels([1, 2, 3, 10, 5, 6]), to: path)
        expectDatasetError(containing: [path, "label 10", "index 3"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test func missingFileSaysWhichAndHowToInstall() throws {
        let directory = try TemporaryDirectory()
        try Self.writeSplit(in: directory)
        try FileManager.default.removeItem(atPath: directory.path + "/train-labels-idx1-ubyte.gz")
        expectDatasetError(containing: ["train-labels-idx1-ubyte", directory.path,
                                        "sudo apt-get install dataset-fashion-mnist", "--data PATH"]) {
            _ = try FashionMNIST.open(directory: directory.path, split: .train)
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: FashionMNIST.defaultDirectory + "/train-images-idx3-ubyte.gz")))
    func installedFashionMNIST() throws {
        let train = try FashionMNIST.open(split: .train)
        let test = try FashionMNIST.open(split: .test)
        #expect(train.count == 60_000 && test.count == 10_000)
        #expect(train.width == 28 && train.height == 28)
        var perClass = [Int](repeating: 0, count: 10)
        for index in 0..<train.count { perClass[train.label(at: index)!] += 1 }
        #expect(perClass == [Int](repeating: 6000, count: 10))
        #expect(train.label(at: 0) == 9)
        #expect(train.classNames[9] == "Ankle boot")
        let first = try train.image(at: 0)
        #expect(first.pixels.count == 784 && first.pixels.contains { $0 > 0 })
    }
}
