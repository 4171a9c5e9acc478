import Foundation

/// The training set and, when the source has one, the held-out set the kNN monitor and the
/// evaluations use.
public struct DatasetSplits: Sendable {
    public let train: any ImageDataset
    public let test: (any ImageDataset)?
    /// What was opened, for the log and run metadata ("Fashion-MNIST", "CIFAR-10", a path).
    public let name: String

    public init(train: any ImageDataset, test: (any ImageDataset)?, name: String) {
        self.train = train
        self.test = test
        self.name = name
    }
}

/// Opens a dataset from the trainer's `--data` value.
public enum DatasetSource {
    /// - Parameters:
    ///   - spec: nil or `"fashion-mnist"` for Fashion-MNIST from ``FashionMNIST/defaultDirectory``;
    ///     otherwise a directory holding IDX files (`train-images-idx3-ubyte[.gz]` …), CIFAR
    ///     binary files (also inside `cifar-10-batches-bin/` or `cifar-100-binary/`), or images:
    ///     `root/train/<class>/*` with an optional `root/val/<class>/*`, `root/<class>/*`, or a
    ///     flat folder of images.
    ///   - preload: for image folders, decode everything into memory up front when it fits
    ///     in ``ImageFolderDataset/preload(memoryBudget:)``'s default budget.
    public static func open(_ spec: String?, preload: Bool = true) throws -> DatasetSplits {
        guard let spec, spec.lowercased() != "fashion-mnist" else {
            return try openIDX(directory: FashionMNIST.defaultDirectory, classNames: FashionMNIST.classNames,
                               name: "Fashion-MNIST")
        }
        guard ImageFolderDataset.isDirectory(spec) else {
            throw DatasetError("""
                dataset \(spec) does not exist or is not a directory: pass `fashion-mnist`, or a directory \
                with IDX files, CIFAR binary files, or images (root/train/<class>/*.jpg)
                """)
        }
        if IDXFiles.isPresent(in: spec) {
            // Fashion-MNIST and MNIST share the format; only Fashion-MNIST's names are known.
            let isFashion = spec.lowercased().contains("fashion")
            return try openIDX(directory: spec,
                               classNames: isFashion ? FashionMNIST.classNames : (0..<10).map(String.init),
                               name: isFashion ? "Fashion-MNIST" : "IDX \(spec)")
        }
        for directory in [spec, spec + "/cifar-10-batches-bin", spec + "/cifar-100-binary"] {
            if let variant = CIFARDataset.variant(in: directory) {
                let hasTest = variant.files(for: .test).allSatisfy {
                    FileManager.default.fileExists(atPath: directory + "/" + $0)
                }
                return DatasetSplits(
                    train: try CIFARDataset(directory: directory, split: .train, variant: variant),
                    test: hasTest ? try CIFARDataset(directory: directory, split: .test, variant: variant) : nil,
                    name: variant.rawValue)
            }
        }
        return try openFolders(root: spec, preload: preload)
    }

    private static func openIDX(directory: String, classNames: [String], name: String) throws -> DatasetSplits {
        DatasetSplits(
            train: try FashionMNIST.open(directory: directory, split: .train, classNames: classNames),
            test: try FashionMNIST.open(directory: directory, split: .test, classNames: classNames),
            name: name)
    }

    /// `root/train` (+ `root/val`) when `root/train` exists, else `root` itself as the train set.
    private static func openFolders(root: String, preload: Bool) throws -> DatasetSplits {
        let trainRoot = root + "/train"
        let valRoot = root + "/val"
        let hasSplits = ImageFolderDataset.isDirectory(trainRoot)
        var train = try ImageFolderDataset(root: hasSplits ? trainRoot : root)
        var test = hasSplits && ImageFolderDataset.isDirectory(valRoot) ? try ImageFolderDataset(root: valRoot) : nil
        if let validation = test, validation.classNames != train.classNames, !validation.classNames.isEmpty {
            throw DatasetError("""
                \(valRoot) has classes \(validation.classNames.prefix(5))… but \(trainRoot) has \
                \(train.classNames.prefix(5))…: val/ must hold the same class folders as train/
                """)
        }
        if preload {
            train.preload()
            test?.preload()
        }
        return DatasetSplits(train: train, test: test, name: root)
    }
}
