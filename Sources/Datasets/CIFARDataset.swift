import Foundation

/// CIFAR-10 or CIFAR-100 in the "binary version" from https://www.cs.toronto.edu/~kriz/cifar.html:
/// fixed-size records of label byte(s) then 3072 pixel bytes as three 32x32 planes (R, G, B).
/// The planes are interleaved to HWC once, at load, into one contiguous array.
public struct CIFARDataset: ImageDataset {
    public enum Variant: String, Sendable {
        /// `data_batch_1.bin`…`data_batch_5.bin`, `test_batch.bin`; record = label + 3072.
        case cifar10 = "CIFAR-10"
        /// `train.bin`, `test.bin`; record = coarse label + fine label + 3072.
        case cifar100 = "CIFAR-100"

        var labelBytes: Int { self == .cifar10 ? 1 : 2 }
        var recordSize: Int { labelBytes + CIFARDataset.side * CIFARDataset.side * 3 }
        var classCount: Int { self == .cifar10 ? 10 : 100 }
        var namesFile: String { self == .cifar10 ? "batches.meta.txt" : "fine_label_names.txt" }

        func files(for split: DatasetSplit) -> [String] {
            switch (self, split) {
            case (.cifar10, .train): return (1...5).map { "data_batch_\($0).bin" }
            case (.cifar10, .test): return ["test_batch.bin"]
            case (.cifar100, .train): return ["train.bin"]
            case (.cifar100, .test): return ["test.bin"]
            }
        }
    }

    static let side = 32

    public let variant: Variant
    public let count: Int
    public let classNames: [String]
    public let summary: String
    private let pixels: [UInt8]
    private let labels: [UInt8]

    /// Which variant `directory` holds, or nil when it holds neither.
    public static func variant(in directory: String) -> Variant? {
        let exists = { FileManager.default.fileExists(atPath: directory + "/" + $0) }
        if exists("data_batch_1.bin") || exists("test_batch.bin") { return .cifar10 }
        if exists("train.bin") || exists("test.bin") { return .cifar100 }
        return nil
    }

    /// Reads one split. CIFAR-100 samples carry their fine (100-class) label.
    ///
    /// - Parameter variant: nil to detect it from the file names in `directory`.
    public init(directory: String, split: DatasetSplit, variant: Variant? = nil) throws {
        guard let variant = variant ?? Self.variant(in: directory) else {
            throw DatasetError("""
                \(directory) holds no CIFAR binary files: expected data_batch_1.bin…data_batch_5.bin and \
                test_batch.bin (CIFAR-10) or train.bin and test.bin (CIFAR-100) from the "binary version" archives
                """)
        }
        let recordSize = variant.recordSize
        let planeSize = Self.side * Self.side
        var pixels: [UInt8] = []
        var labels: [UInt8] = []
        for name in variant.files(for: split) {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DatasetError("\(variant.rawValue) file \(path) is missing or unreadable; download the binary version from https://www.cs.toronto.edu/~kriz/cifar.html")
            }
            guard !data.isEmpty, data.count % recordSize == 0 else {
                throw DatasetError("\(path) is \(data.count) bytes, not a whole number of \(recordSize)-byte \(variant.rawValue) records; the file is truncated or is not a \(variant.rawValue) binary batch")
            }
            let records = data.count / recordSize
            let firstPixel = pixels.count
            pixels += [UInt8](repeating: 0, count: records * planeSize * 3)
            labels.reserveCapacity(labels.count + records)
            try data.withUnsafeBytes { (source: UnsafeRawBufferPointer) in
                try pixels.withUnsafeMutableBufferPointer { destination in
                    for record in 0..<records {
                        let base = record * recordSize
                        // The fine label is the last label byte of a CIFAR-100 record.
                        let label = source[base + variant.labelBytes - 1]
                        guard Int(label) < variant.classCount else {
                            throw DatasetError("\(path): record \(record) has label \(label), not below \(variant.classCount); the file is corrupt")
                        }
                        labels.append(label)
                        let planes = base + variant.labelBytes
                        let output = firstPixel + record * planeSize * 3
                        for pixel in 0..<planeSize {
                            destination[output + 3 * pixel] = source[planes + pixel]
                            destination[output + 3 * pixel + 1] = source[planes + planeSize + pixel]
                            destination[output + 3 * pixel + 2] = source[planes + 2 * planeSize + pixel]
                        }
                    }
                }
            }
        }
        self.variant = variant
        self.pixels = pixels
        self.labels = labels
        self.count = labels.count
        self.classNames = try Self.classNames(directory: directory, variant: variant)
        self.summary = "\(variant.rawValue) \(split.rawValue): \(labels.count) images 32x32 RGB, \(variant.classCount) classes, from \(directory)"
    }

    public func label(at index: Int) -> Int? { Int(labels[index]) }

    public func image(at index: Int) throws -> Image {
        guard (0..<count).contains(index) else {
            throw DatasetError("sample index \(index) is outside 0..<\(count)")
        }
        let size = Self.side * Self.side * 3
        return Image(width: Self.side, height: Self.side, channels: 3,
                     pixels: Array(pixels[index * size ..< (index + 1) * size]))
    }

    /// Names from the archive's text file, one a line; "0", "1", … when the file is absent.
    private static func classNames(directory: String, variant: Variant) throws -> [String] {
        let path = directory + "/" + variant.namesFile
        guard let data = FileManager.default.contents(atPath: path) else {
            return (0..<variant.classCount).map(String.init)
        }
        let names = String(decoding: data, as: UTF8.self)
            .split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard names.count == variant.classCount else {
            throw DatasetError("\(path) lists \(names.count) class names, not \(variant.classCount); fix or remove the file")
        }
        return names
    }
}
