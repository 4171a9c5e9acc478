/// An 8-bit image in memory, rows top to bottom, channels interleaved (H, W, C): C = 1 (grey)
/// or 3 (RGB). Datasets hand these to the augmentations, which produce normalised float views.
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    /// (height, width, channels), row-major.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(channels == 1 || channels == 3, "an Image has 1 or 3 channels")
        precondition(pixels.count == width * height * channels, "pixel count does not match the shape")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// A random-access set of images with optional class labels, as the trainer, the monitors and
/// the evaluations read it. Labels are used only by the kNN monitor and the evaluations.
///
/// `image(at:)` may be called from several threads at once.
public protocol ImageDataset: Sendable {
    /// Number of samples.
    var count: Int { get }
    /// Class names in label order; empty for an unlabeled dataset.
    var classNames: [String] { get }
    /// The label of sample `index` in `0..<classNames.count`, or nil when unlabeled.
    func label(at index: Int) -> Int?
    /// Sample `index`, decoded. Throws ``DatasetError`` naming the file when it cannot be read.
    func image(at index: Int) throws -> Image
    /// One line for the log: what was read from where, and how many samples were skipped.
    var summary: String { get }
    /// Files found but left out of the dataset because they could not be read, with the
    /// decoder's reason (empty for datasets read from one file).
    var skippedFiles: [(path: String, reason: String)] { get }
}

extension ImageDataset {
    public var isLabeled: Bool { !classNames.isEmpty }
    public var skippedFiles: [(path: String, reason: String)] { [] }
}

/// A dataset that cannot be opened or a sample that cannot be read: says what and where, and
/// what to do about it.
public struct DatasetError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
