/// Which half of a dataset with a fixed train/test division to read.
public enum DatasetSplit: String, Sendable, CaseIterable {
    case train
    case test
}

/// Images and labels from a pair of IDX files (the MNIST / Fashion-MNIST format: a big-endian
/// header, then unsigned bytes), gzip-compressed or plain. All pixels live in one contiguous
/// array so `image(at:)` is a single slice copy.
///
/// Format: http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
public struct IDXDataset: ImageDataset {
    /// Magic number of an unsigned-byte IDX file with 3 dimensions (count, rows, columns).
    public static let imagesMagic = 0x0000_0803
    /// Magic number of an unsigned-byte IDX file with 1 dimension (count).
    public static let labelsMagic = 0x0000_0801

    public let count: Int
    public let width: Int
    public let height: Int
    public let classNames: [String]
    public let summary: String
    private let pixels: [UInt8]
    private let labels: [UInt8]

    /// Reads an images file and its labels file.
    ///
    /// - Parameters:
    ///   - imagesPath: an `idx3-ubyte` file, `.gz` or plain.
    ///   - labelsPath: the matching `idx1-ubyte` file.
    ///   - classNames: names in label order; every label must be below `classNames.count`.
    ///   - name: what to call the data in `summary` ("Fashion-MNIST train").
    public init(imagesPath: String, labelsPath: String, classNames: [String], name: String) throws {
        let (pixels, count, height, width) = try Self.readImages(path: imagesPath)
        let labels = try Self.readLabels(path: labelsPath)
        guard labels.count == count else {
            throw DatasetError("""
                \(imagesPath) holds \(count) images but \(labelsPath) holds \(labels.count) labels: \
                the two files must come from the same split
                """)
        }
        if let index = labels.firstIndex(where: { Int($0) >= classNames.count }) {
            throw DatasetError("""
                \(labelsPath): label \(labels[index]) at index \(index) is not below the \
                \(classNames.count) classes; the file is corrupt or is not from this dataset
                """)
        }
        self.pixels = pixels
        self.labels = labels
        self.count = count
        self.height = height
        self.width = width
        self.classNames = classNames
        self.summary = "\(name): \(count) images \(width)x\(height) grey, \(classNames.count) classes, from \(imagesPath)"
    }

    public func label(at index: Int) -> Int? { Int(labels[index]) }

    public func image(at index: Int) throws -> Image {
        guard (0..<count).contains(index) else {
            throw DatasetError("sample index \(index) is outside 0..<\(count)")
        }
        let size = width * height
        return Image(width: width, height: height, channels: 1,
                     pixels: Array(pixels[index * size ..< (index + 1) * size]))
    }

    private static func readImages(path: String) throws -> (pixels: [UInt8], count: Int, height: Int, width: Int) {
        let file = try GzipFile(path: path)
        defer { file.close() }
        let header = try file.read(count: 16)
        guard header.count == 16 else {
            throw DatasetError("\(path) is too short for an IDX images header (16 bytes); the file is truncated")
        }
        let magic = bigEndianWord(header, at: 0)
        guard magic == imagesMagic else {
            throw DatasetError("\(path) starts with magic number \(hex32(magic)), not \(hex32(imagesMagic)) (IDX unsigned-byte images); it is not an idx3-ubyte images file")
        }
        let count = bigEndianWord(header, at: 4)
        let height = bigEndianWord(header, at: 8)
        let width = bigEndianWord(header, at: 12)
        let imageBytes = height.multipliedReportingOverflow(by: width)
        let totalBytes = count.multipliedReportingOverflow(by: imageBytes.partialValue)
        guard height > 0, width > 0, !imageBytes.overflow, !totalBytes.overflow, totalBytes.partialValue < 1 << 36 else {
            throw DatasetError("\(path) declares \(count) images of \(height)x\(width), which is not a plausible shape; the header is corrupt")
        }
        guard totalBytes.partialValue <= file.maximumContentBytes else {
            throw DatasetError("\(path) declares \(count) images of \(height)x\(width) (\(totalBytes.partialValue) bytes), more "
                + "than the file can hold; the header is corrupt or the file is truncated")
        }
        let expected = count * height * width
        var pixels = [UInt8](repeating: 0, count: expected)
        let got = try pixels.withUnsafeMutableBytes { try file.read(into: $0) }
        guard got == expected else {
            throw DatasetError("\(path) is truncated: its header declares \(count) images of \(height)x\(width) (\(expected) bytes) but only \(got) bytes follow")
        }
        guard try file.isAtEnd() else {
            throw DatasetError("\(path) has bytes after the \(count) images its header declares; the header or the file is corrupt")
        }
        return (pixels, count, height, width)
    }

    private static func readLabels(path: String) throws -> [UInt8] {
        let file = try GzipFile(path: path)
        defer { file.close() }
        let header = try file.read(count: 8)
        guard header.count == 8 else {
            throw DatasetError("\(path) is too short for an IDX labels header (8 bytes); the file is truncated")
        }
        let magic = bigEndianWord(header, at: 0)
        guard magic == labelsMagic else {
            throw DatasetError("\(path) starts with magic number \(hex32(magic)), not \(hex32(labelsMagic)) (IDX unsigned-byte labels); it is not an idx1-ubyte labels file")
        }
        let count = bigEndianWord(header, at: 4)
        guard count < 1 << 32, count <= file.maximumContentBytes else {
            throw DatasetError("\(path) declares \(count) labels, more than the file can hold; the header is corrupt "
                + "or the file is truncated")
        }
        let labels = try file.read(count: count)
        guard labels.count == count else {
            throw DatasetError("\(path) is truncated: its header declares \(count) labels but only \(labels.count) bytes follow")
        }
        guard try file.isAtEnd() else {
            throw DatasetError("\(path) has bytes after the \(count) labels its header declares; the header or the file is corrupt")
        }
        return labels
    }
}
