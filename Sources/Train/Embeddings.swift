import Augment
import Datasets
import Foundation
import Model
import Tensors

/// `mocov3-cl embed`: the evaluation-transform features of every image of a split (the final-LN
/// class token, or the pooled feature of a global-average-pooling model), on the chosen device.
///
/// The file holds `features` (N, C) F32, `labels` (N) I64 (−1 when unlabeled), `indices` (N)
/// I64 (each row's index in the split; unreadable images are left out), optionally `inputs`
/// (the first K transformed images, (K, 3, S, S), for checking another tool's features on exactly
/// these pixels), and in the metadata the class names and, for image folders, every row's path
/// (JSON arrays), the source weights and the encoder.
public enum Embeddings {
    public struct Result {
        public var features: [Float]
        public var labels: [Int32]
        public var indices: [Int]
        public var inputs: [Float]
        public var skipped: [String]
    }

    /// Runs `extractor` over every image of `dataset` through the evaluation transform; keeps the
    /// first `keepInputs` transformed images. `progress(done, total)` after every batch.
    public static func compute(extractor: FeatureExtractor, dataset: any ImageDataset, keepInputs: Int = 0,
                               workers: Int, progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        try collect(dataset, imageSize: extractor.config.imageSize, width: extractor.config.embedDim,
                    batchSize: extractor.batchSize, keepInputs: keepInputs, workers: workers, progress: progress) {
            try extractor.features(of: $0.x, count: $0.labels.count)
        }
    }

    /// The one pass over a split that the kNN evaluation, the probe's features and `embed` share:
    /// every sample through the evaluation transform in index order, `represent` mapping each
    /// batch to its (count, width) rows (an encoder's features, or the pixels themselves).
    static func collect(_ dataset: any ImageDataset, imageSize: Int, width: Int, batchSize: Int, keepInputs: Int = 0,
                        workers: Int, progress: (Int, Int) -> Void = { _, _ in },
                        represent: (EvalBatch) throws -> [Float]) throws -> Result {
        let batches = EvalBatches(dataset: dataset, transform: EvalTransform(imageSize: imageSize),
                                  batchSize: batchSize, workers: workers)
        var result = Result(features: [], labels: [], indices: [], inputs: [], skipped: [])
        result.features.reserveCapacity(dataset.count * width)
        let perImage = 3 * imageSize * imageSize
        while let batch = try batches.next() {
            // Unreadable samples are left out of their batch; one can leave it empty.
            guard !batch.labels.isEmpty else { continue }
            result.features += try represent(batch)
            result.labels += batch.labels
            result.indices += batch.indices
            let wanted = min(keepInputs - result.inputs.count / perImage, batch.labels.count)
            if wanted > 0 { result.inputs += batch.x[0..<(wanted * perImage)] }
            progress(result.indices.count, dataset.count)
        }
        result.skipped = batches.errorDescriptions
        return result
    }

    /// Writes `result` (see the type's documentation) atomically to `url`.
    public static func write(_ result: Result, config: ViTConfig, dataset: any ImageDataset, metadata extra: [String: String],
                             to url: URL) throws {
        var metadata = Checkpoint.metadata(for: config).merging(extra) { $1 }
        func json(_ strings: [String]) -> String {
            String(decoding: (try? JSONEncoder().encode(strings)) ?? Data("[]".utf8), as: UTF8.self)
        }
        metadata["classes"] = json(dataset.classNames)
        if let folder = dataset as? ImageFolderDataset { metadata["paths"] = json(result.indices.map { folder.path(at: $0) }) }
        var writer = SafetensorsWriter(metadata: metadata)
        let count = result.indices.count
        try writer.add("features", shape: [count, config.embedDim], floats: result.features)
        try writer.add("labels", shape: [count], int64s: result.labels.map(Int64.init))
        try writer.add("indices", shape: [count], int64s: result.indices.map(Int64.init))
        if !result.inputs.isEmpty {
            let kept = result.inputs.count / (3 * config.imageSize * config.imageSize)
            try writer.add("inputs", shape: [kept, 3, config.imageSize, config.imageSize], floats: result.inputs)
        }
        try writer.write(to: url)
    }
}
