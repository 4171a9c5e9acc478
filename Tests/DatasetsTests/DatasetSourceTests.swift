import Foundation
import Testing
@testable import Datasets

@Suite struct DatasetSourceTests {
    @Test func imageNetLayoutOpensTrainAndVal() throws {
        let directory = try TemporaryDirectory()
        let images = try ImageFolderDatasetTests.writeClassFolders(in: directory, under: "train/")
        try directory.folder("val/ant")
        try directory.folder("val/zebra")
        let valImage = try ImageFolderDatasetTests.writePNG("val/zebra/v.png", in: directory, seed: 20)
        let splits = try DatasetSource.open(directory.path)
        #expect(splits.train.classNames == ["ant", "zebra"])
        #expect(splits.train.count == 4)
        #expect(try splits.train.image(at: 3) == images["zebra/b.png"])
        let train = try #require(splits.train as? ImageFolderDataset)
        #expect(train.isPreloaded)
        let test = try #require(splits.test)
        #expect(test.classNames == ["ant", "zebra"])
        #expect(test.count == 1 && test.label(at: 0) == 1)
        #expect(try test.image(at: 0) == valImage)
    }

    @Test func classFolderRootHasNoTestSplit() throws {
        let directory = try TemporaryDirectory()
        _ = try ImageFolderDatasetTests.writeClassFolders(in: directory)
        let splits = try DatasetSource.open(directory.path, preload: false)
        #expect(splits.train.count == 4 && splits.test == nil)
        #expect((splits.train as? ImageFolderDataset)?.isPreloaded == false)
    }

    @Test func mismatchedValClassesAreAnError() throws {
        let directory = try TemporaryDirectory()
        _ = try ImageFolderDatasetTests.writeClassFolders(in: directory, under: "train/")
        try directory.folder("val/bee")
        try ImageFolderDatasetTests.writePNG("val/bee/v.png", in: directory, seed: 21)
        expectDatasetError(containing: [directory.path + "/val", "same class folders"]) {
            _ = try DatasetSource.open(directory.path, preload: false)
        }
    }

    @Test func idxDirectoryOpensBothSplits() throws {
        let directory = try TemporaryDirectory()
        let train = try IDXDatasetTests.writeSplit(in: directory, seed: 30)
        try IDXDatasetTests.writeSplit(in: directory, prefix: "t10k", compressed: false, seed: 31)
        let splits = try DatasetSource.open(directory.path)
        #expect(splits.train.count == IDXDatasetTests.count && splits.test?.count == IDXDatasetTests.count)
        #expect(try splits.train.image(at: 1).pixels == Array(train.pixels[35..<70]))
        #expect(splits.train.classNames == (0..<10).map(String.init))
    }

    @Test func cifarDirectoryIsFoundInsideTheArchiveFolder() throws {
        let directory = try TemporaryDirectory()
        try directory.folder("cifar-10-batches-bin")
        for name in (1...5).map({ "data_batch_\($0).bin" }) + ["test_batch.bin"] {
            try directory.write([3] + [UInt8](repeating: 9, count: 3072), to: "cifar-10-batches-bin/" + name)
        }
        let splits = try DatasetSource.open(directory.path)
        #expect(splits.name == "CIFAR-10")
        #expect(splits.train.count == 5 && splits.test?.count == 1)
        #expect(splits.train.label(at: 4) == 3)
    }

    @Test func missingPathIsNamed() {
        expectDatasetError(containing: ["/nonexistent/imagenet", "does not exist"]) {
            _ = try DatasetSource.open("/nonexistent/imagenet")
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: FashionMNIST.defaultDirectory + "/t10k-images-idx3-ubyte.gz")))
    func defaultIsInstalledFashionMNIST() throws {
        let splits = try DatasetSource.open(nil)
        #expect(splits.name == "Fashion-MNIST")
        #expect(splits.train.count == 60_000 && splits.test?.count == 10_000)
        #expect(splits.train.classNames == FashionMNIST.classNames)
    }
}
