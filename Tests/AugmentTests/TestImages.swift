import Datasets
import Tensors
@testable import Augment

/// A 1-row float image whose three channels hold `red`, `green`, `blue`.
func rowImage(red: [Float], green: [Float], blue: [Float]) -> FloatImage {
    FloatImage(height: 1, width: red.count, pixels: red + green + blue)
}

/// A float image of one RGB pixel per entry of `colors`, in one row.
func pixelRow(_ colors: [(Float, Float, Float)]) -> FloatImage {
    rowImage(red: colors.map(\.0), green: colors.map(\.1), blue: colors.map(\.2))
}

/// Seeded random 8-bit pixels: never constant, so an op that ignores its input shows.
func randomImage(width: Int, height: Int, channels: Int, seed: UInt64) -> Image {
    var generator = SplitMix64(seed: seed)
    let pixels = (0..<(width * height * channels)).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 56) }
    return Image(width: width, height: height, channels: channels, pixels: pixels)
}

/// An in-memory dataset; reading an index in `failing` throws, as a corrupt file would.
struct MemoryDataset: ImageDataset {
    var images: [Image]
    var labels: [Int]?
    var failing: Set<Int> = []

    var count: Int { images.count }
    var classNames: [String] { labels == nil ? [] : (0..<10).map { "class \($0)" } }
    func label(at index: Int) -> Int? { labels?[index] }
    func image(at index: Int) throws -> Image {
        if failing.contains(index) { throw DatasetError("cannot decode /data/img\(index).png") }
        return images[index]
    }
    var summary: String { "\(count) in-memory images" }

    init(count: Int, width: Int = 6, height: Int = 5, channels: Int = 3, labeled: Bool = true,
         failing: Set<Int> = []) {
        images = (0..<count).map { randomImage(width: width, height: height, channels: channels, seed: UInt64($0) + 1) }
        labels = labeled ? (0..<count).map { $0 % 10 } : nil
        self.failing = failing
    }
}
