import Dispatch
import Foundation

/// JPEG and PNG files in folders, in one of three layouts:
/// - class folders, `root/<class>/*` (torchvision `ImageFolder`): labels are the indices of the
///   sorted folder names;
/// - a flat folder of images: unlabeled (`classNames` empty, `label(at:)` nil);
/// - the ImageNet layout `root/train/<class>/*` + `root/val/<class>/*`, opened one split at a
///   time through ``DatasetSource``.
///
/// Files are listed in sorted order, and only `.jpg`, `.jpeg` and `.png` (any case) are taken.
/// Samples decode on demand unless ``preload(memoryBudget:)`` has cached them.
public struct ImageFolderDataset: ImageDataset {
    /// Extensions taken as images, lower-cased.
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public let root: String
    public let classNames: [String]
    /// Files that failed to decode during ``preload(memoryBudget:)`` and were dropped.
    public private(set) var skipped: [(path: String, reason: String)] = []
    private var paths: [String]
    private var labels: [Int]
    private var cache: [Image]?

    public var count: Int { paths.count }
    /// True when every sample is held decoded in memory.
    public var isPreloaded: Bool { cache != nil }

    /// Lists `root`: class folders when it has subfolders holding images, else the images in it.
    public init(root: String) throws {
        guard Self.isDirectory(root) else {
            throw DatasetError("image folder \(root) does not exist or is not a directory: pass a folder of class subfolders (root/<class>/*.jpg) or of images")
        }
        let entries = try Self.sortedEntries(of: root)
        let classFolders = entries.filter { Self.isDirectory(root + "/" + $0) }
        var paths: [String] = []
        var labels: [Int] = []
        var classNames: [String] = []
        if classFolders.isEmpty {
            paths = entries.filter(Self.isImageName).map { root + "/" + $0 }
            guard !paths.isEmpty else {
                throw DatasetError("\(root) holds no images (.jpg, .jpeg, .png) and no class subfolders: expected root/<class>/*.jpg or a flat folder of images")
            }
        } else {
            classNames = classFolders
            for (label, name) in classFolders.enumerated() {
                let folder = root + "/" + name
                let files = try Self.sortedEntries(of: folder).filter(Self.isImageName).map { folder + "/" + $0 }
                paths += files
                labels += Array(repeating: label, count: files.count)
            }
            guard !paths.isEmpty else {
                throw DatasetError("\(root) has \(classFolders.count) class subfolders but no images (.jpg, .jpeg, .png) in them: expected root/<class>/*.jpg")
            }
        }
        self.root = root
        self.paths = paths
        self.labels = labels
        self.classNames = classNames
    }

    public func path(at index: Int) -> String { paths[index] }

    public func label(at index: Int) -> Int? { labels.isEmpty ? nil : labels[index] }

    public func image(at index: Int) throws -> Image {
        guard (0..<count).contains(index) else {
            throw DatasetError("sample index \(index) is outside 0..<\(count)")
        }
        if let cache { return cache[index] }
        return try ImageDecoder.decode(contentsOf: paths[index])
    }

    public var skippedFiles: [(path: String, reason: String)] { skipped }

    public var summary: String {
        let labeling = classNames.isEmpty ? "unlabeled" : "\(classNames.count) classes"
        let mode = cache == nil ? "decoded on demand" : "preloaded"
        return "image folder \(root): \(count) images, \(labeling), \(mode), \(skipped.count) skipped"
    }

    /// Decodes every file in parallel and keeps the pixels, when they fit in `memoryBudget` bytes.
    /// Files that fail to decode are dropped from the dataset and listed in ``skipped``.
    ///
    /// The decoded size is first estimated from the headers of up to 64 evenly spaced files, so
    /// a dataset far over budget (ImageNet) costs a few reads, not a full decode; the actual total
    /// is tracked while decoding and the cache is abandoned if it goes over.
    ///
    /// - Returns: true when the samples are now cached; false when they would not fit, in which
    ///   case nothing changes and `image(at:)` keeps decoding on demand.
    @discardableResult
    public mutating func preload(memoryBudget: Int = 4 << 30) -> Bool {
        guard cache == nil else { return true }
        if let estimate = estimatedDecodedBytes(), estimate > memoryBudget { return false }

        let results = DecodeResults(count: paths.count, budget: memoryBudget)
        let paths = self.paths
        DispatchQueue.concurrentPerform(iterations: paths.count) { index in
            guard !results.isOverBudget else { return }
            do {
                results.store(.success(try ImageDecoder.decode(contentsOf: paths[index])), at: index)
            } catch {
                results.store(.failure(error), at: index)
            }
        }
        guard !results.isOverBudget else { return false }

        var images: [Image] = []
        var keptPaths: [String] = []
        var keptLabels: [Int] = []
        for (index, result) in results.values.enumerated() {
            switch result {
            case .success(let image):
                images.append(image)
                keptPaths.append(paths[index])
                if !labels.isEmpty { keptLabels.append(labels[index]) }
            case .failure(let error):
                skipped.append((paths[index], "\(error)"))
            case nil:
                return false
            }
        }
        self.paths = keptPaths
        self.labels = keptLabels
        self.cache = images
        return true
    }

    /// Mean decoded size of a sample of headers, times the count; nil when no header is readable.
    private func estimatedDecodedBytes() -> Int? {
        let sampleCount = min(paths.count, 64)
        var total = 0, readable = 0
        for step in 0..<sampleCount {
            let index = step * paths.count / sampleCount
            guard let bytes = try? ImageDecoder.readFile(paths[index]),
                  let shape = ImageDecoder.shape(of: bytes) else { continue }
            total += shape.width * shape.height * shape.channels
            readable += 1
        }
        return readable == 0 ? nil : total / readable * paths.count
    }

    static func isImageName(_ name: String) -> Bool {
        guard let dot = name.lastIndex(of: "."), !name.hasPrefix(".") else { return false }
        return imageExtensions.contains(name[name.index(after: dot)...].lowercased())
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Names in `directory`, sorted by Unicode scalars like Python's `sorted` (torchvision's order).
    static func sortedEntries(of directory: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: directory)
                .filter { !$0.hasPrefix(".") }
                .sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        } catch {
            throw DatasetError("cannot list \(directory): \(error.localizedDescription)")
        }
    }
}

/// One slot per file, written by exactly one `concurrentPerform` iteration each; the running
/// byte total is shared and guarded by a lock.
private final class DecodeResults: @unchecked Sendable {
    private(set) var values: [Result<Image, Error>?]
    private let budget: Int
    private var decodedBytes = 0
    private var overBudget = false
    private let lock = NSLock()

    init(count: Int, budget: Int) {
        values = Array(repeating: nil, count: count)
        self.budget = budget
    }

    var isOverBudget: Bool { lock.withLock { overBudget } }

    func store(_ result: Result<Image, Error>, at index: Int) {
        lock.withLock {
            if case .success(let image) = result {
                decodedBytes += image.pixels.count
                if decodedBytes > budget { overBudget = true; return }
            }
            values[index] = result
        }
    }
}
