import Foundation

/// Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of clothing in 10 classes, stored
/// as IDX files. Debian ships them in the `dataset-fashion-mnist` package.
public enum FashionMNIST {
    /// Where `dataset-fashion-mnist` installs the four files.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"

    /// Label order from https://github.com/zalandoresearch/fashion-mnist#labels.
    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    /// The file-name stem of each split: `train-…` and `t10k-…`.
    static func prefix(of split: DatasetSplit) -> String {
        split == .train ? "train" : "t10k"
    }

    /// Reads one split from `directory`.
    ///
    /// - Parameter classNames: label names; MNIST digits in the same format can pass "0"…"9".
    public static func open(directory: String = defaultDirectory, split: DatasetSplit,
                            classNames: [String] = classNames) throws -> IDXDataset {
        let stem = prefix(of: split)
        let images = try IDXFiles.locate("\(stem)-images-idx3-ubyte", in: directory)
        let labels = try IDXFiles.locate("\(stem)-labels-idx1-ubyte", in: directory)
        let name = classNames == Self.classNames ? "Fashion-MNIST \(split.rawValue)" : "IDX \(split.rawValue)"
        return try IDXDataset(imagesPath: images, labelsPath: labels, classNames: classNames, name: name)
    }
}

/// Finds IDX files by name, compressed or not.
enum IDXFiles {
    /// `directory/name.gz` when present, else `directory/name`; throws naming both when neither is.
    static func locate(_ name: String, in directory: String) throws -> String {
        let directoryURL = URL(fileURLWithPath: directory)
        for candidate in [name + ".gz", name] {
            let path = directoryURL.appendingPathComponent(candidate).path
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw DatasetError("""
            \(name).gz (or \(name)) is missing from \(directory): \
            install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data PATH
            """)
    }

    /// True when `directory` holds the training images of an IDX dataset.
    static func isPresent(in directory: String) -> Bool {
        (try? locate("train-images-idx3-ubyte", in: directory)) != nil
    }
}
