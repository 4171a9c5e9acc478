import Foundation
import Testing
@testable import Datasets

@Suite struct ImageFolderDatasetTests {
    /// Writes a PNG of `width`x`height` with pixels from `seed` and returns the expected image.
    @discardableResult
    static func writePNG(_ relative: String, in directory: TemporaryDirectory, width: Int = 5, height: Int = 4,
                         channels: Int = 3, seed: UInt64) throws -> Image {
        var random = TestBytes(seed: seed)
        let pixels = random.bytes(width * height * channels)
        try directory.write(try TestFiles.png(width: width, height: height, channels: channels, pixels: pixels), to: relative)
        return Image(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// `root/<class>/…` with two classes written out of order, plus a file that is not an image.
    static func writeClassFolders(in directory: TemporaryDirectory, under prefix: String = "") throws -> [String: Image] {
        try directory.folder(prefix + "zebra")
        try directory.folder(prefix + "ant")
        var images: [String: Image] = [:]
        images["zebra/b.png"] = try writePNG(prefix + "zebra/b.png", in: directory, seed: 1)
        images["zebra/a.PNG"] = try writePNG(prefix + "zebra/a.PNG", in: directory, channels: 1, seed: 2)
        images["ant/c.png"] = try writePNG(prefix + "ant/c.png", in: directory, width: 3, height: 7, seed: 3)
        let jpegPixels = TestFiles.gradient(width: 6, height: 5, channels: 3, seed: 4)
        try directory.write(try TestFiles.jpeg(width: 6, height: 5, channels: 3, pixels: jpegPixels), to: prefix + "ant/d.JPEG")
        images["ant/d.JPEG"] = Image(width: 6, height: 5, channels: 3, pixels: jpegPixels)
        try directory.write(Array("not an image".utf8), to: prefix + "ant/notes.txt")
        return images
    }

    @Test func classFoldersAreSortedAndLabeled() throws {
        let directory = try TemporaryDirectory()
        let images = try Self.writeClassFolders(in: directory)
        let dataset = try ImageFolderDataset(root: directory.path)
        #expect(dataset.classNames == ["ant", "zebra"])
        #expect(dataset.count == 4)
        let order = ["ant/c.png", "ant/d.JPEG", "zebra/a.PNG", "zebra/b.png"]
        #expect((0..<4).map { dataset.path(at: $0) } == order.map { directory.path + "/" + $0 })
        #expect((0..<4).map { dataset.label(at: $0) } == [0, 0, 1, 1])
        #expect(!dataset.isPreloaded)
        for (index, name) in order.enumerated() where !name.hasSuffix("JPEG") {
            #expect(try dataset.image(at: index) == images[name], "\(name) decoded on demand")
        }
        let jpeg = try dataset.image(at: 1)
        #expect(jpeg.width == 6 && jpeg.height == 5 && jpeg.channels == 3)
    }

    @Test func preloadKeepsTheSamePixels() throws {
        let directory = try TemporaryDirectory()
        _ = try Self.writeClassFolders(in: directory)
        let onDemand = try ImageFolderDataset(root: directory.path)
        var preloaded = onDemand
        let cached = preloaded.preload()
        #expect(cached)
        #expect(preloaded.isPreloaded && preloaded.skipped.isEmpty)
        #expect(preloaded.count == 4)
        for index in 0..<4 {
            #expect(try preloaded.image(at: index) == onDemand.image(at: index))
            #expect(preloaded.label(at: index) == onDemand.label(at: index))
        }
        #expect(preloaded.summary.contains("preloaded") && preloaded.summary.contains("0 skipped"))
    }

    @Test func preloadOverBudgetLeavesDecodingOnDemand() throws {
        let directory = try TemporaryDirectory()
        _ = try Self.writeClassFolders(in: directory)
        var dataset = try ImageFolderDataset(root: directory.path)
        let cached = dataset.preload(memoryBudget: 50)
        #expect(!cached)
        #expect(!dataset.isPreloaded && dataset.count == 4)
        #expect(try dataset.image(at: 0).width == 3)
    }

    /// The batch loader calls `image(at:)` from several threads; every read must match the
    /// single-threaded one, cached or decoded on demand.
    @Test(arguments: [false, true])
    func concurrentReadsMatch(preloaded: Bool) throws {
        let directory = try TemporaryDirectory()
        for index in 0..<24 {
            try Self.writePNG(String(format: "%02d.png", index), in: directory, width: 9, height: 6,
                              channels: index % 2 == 0 ? 3 : 1, seed: UInt64(100 + index))
        }
        var dataset = try ImageFolderDataset(root: directory.path)
        if preloaded { _ = dataset.preload() }
        #expect(dataset.isPreloaded == preloaded)
        let expected = try (0..<dataset.count).map { try dataset.image(at: $0) }
        let mismatches = MismatchCounter()
        let shared = dataset
        DispatchQueue.concurrentPerform(iterations: 200) { step in
            let index = step * 7 % expected.count
            if (try? shared.image(at: index)) != expected[index] { mismatches.add() }
        }
        #expect(mismatches.value == 0)
    }

    @Test func flatFolderIsUnlabeled() throws {
        let directory = try TemporaryDirectory()
        let first = try Self.writePNG("one.png", in: directory, seed: 5)
        let second = try Self.writePNG("two.png", in: directory, channels: 1, seed: 6)
        let dataset = try ImageFolderDataset(root: directory.path)
        #expect(dataset.classNames.isEmpty && !dataset.isLabeled)
        #expect(dataset.count == 2)
        #expect(dataset.label(at: 0) == nil && dataset.label(at: 1) == nil)
        #expect(try dataset.image(at: 0) == first)
        #expect(try dataset.image(at: 1) == second)
        #expect(dataset.summary.contains("unlabeled"))
    }

    @Test func corruptFilesAreSkippedAtPreload() throws {
        let directory = try TemporaryDirectory()
        try directory.folder("cat")
        try directory.folder("dog")
        let good = try Self.writePNG("cat/good.png", in: directory, seed: 7)
        let other = try Self.writePNG("dog/fine.png", in: directory, channels: 1, seed: 8)
        var random = TestBytes(seed: 9)
        var noise = random.bytes(400)
        noise[0] = 0x42
        try directory.write(noise, to: "cat/noise.jpg")
        let whole = try TestFiles.png(width: 64, height: 64, channels: 3, pixels: random.bytes(64 * 64 * 3))
        try directory.write(Array(whole.prefix(whole.count / 2)), to: "dog/cut.png")

        var dataset = try ImageFolderDataset(root: directory.path)
        #expect(dataset.count == 4)
        let cached = dataset.preload()
        #expect(cached)
        #expect(dataset.count == 2)
        #expect(dataset.skipped.map(\.path).sorted() == [directory.path + "/cat/noise.jpg", directory.path + "/dog/cut.png"])
        #expect(dataset.skipped.allSatisfy { !$0.reason.isEmpty })
        #expect(try dataset.image(at: 0) == good && dataset.label(at: 0) == 0)
        #expect(try dataset.image(at: 1) == other && dataset.label(at: 1) == 1)
        #expect(dataset.summary.contains("2 skipped"))
    }

    @Test func corruptFileOnDemandThrowsNamingThePath() throws {
        let directory = try TemporaryDirectory()
        try Self.writePNG("a.png", in: directory, seed: 10)
        try directory.write([0x42] + [UInt8](repeating: 7, count: 99), to: "b.jpg")
        let dataset = try ImageFolderDataset(root: directory.path)
        #expect(try dataset.image(at: 0).width == 5)
        expectDatasetError(containing: [directory.path + "/b.jpg"]) { _ = try dataset.image(at: 1) }
    }

    @Test func emptyAndMissingFoldersAreErrors() throws {
        let directory = try TemporaryDirectory()
        try directory.write(Array("readme".utf8), to: "README.txt")
        expectDatasetError(containing: [directory.path, "no images", "root/<class>/*.jpg"]) {
            _ = try ImageFolderDataset(root: directory.path)
        }
        try directory.folder("cat")
        expectDatasetError(containing: [directory.path, "1 class subfolders but no images"]) {
            _ = try ImageFolderDataset(root: directory.path)
        }
        let missing = directory.path + "/absent"
        expectDatasetError(containing: [missing, "does not exist"]) {
            _ = try ImageFolderDataset(root: missing)
        }
    }
}

private final class MismatchCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
