import ArgumentParser
import Datasets
import Foundation
import Tensors
import Model
import Train

/// `mocov3-cl knn`: the kNN evaluation of a checkpoint's base-encoder features (InstDisc
/// protocol: cosine similarity, k nearest training samples vote with weight exp(s/T)).
struct KNN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "knn",
        abstract: "Measure the kNN top-1 of a checkpoint's features on the held-out split, against the training split.")

    @Option(help: "A pretrain checkpoint, or any weights file with the model configuration in its __metadata__.")
    var checkpoint: String?
    @Flag(help: "Classify the normalised pixels themselves instead, the baseline; this needs no checkpoint.")
    var rawPixels = false
    @Option(help: "The data: fashion-mnist, the default, an image folder with train/ and val/, or a CIFAR binary folder.")
    var data: String?
    @Option(help: "The image side for --raw-pixels.") var imageSize = 28
    @Option(help: "The encoder whose features are classified: base or momentum.") var encoder = "base"
    @Option(help: "The number of neighbours k.") var k = 200
    @Option(help: "The temperature of the vote.") var t = 0.07
    @Option(help: "The batch size of the feature extraction.") var batchSize = 256
    @OptionGroup var deviceOptions: DeviceOptions

    func validate() throws {
        guard rawPixels != (checkpoint != nil) else {
            throw ValidationError("pass either --checkpoint PATH or --raw-pixels")
        }
        guard k >= 1, t > 0, t.isFinite, batchSize >= 1, imageSize >= 1 else {
            throw ValidationError("--k, --batch-size and --image-size must be ≥ 1 and --t positive")
        }
        guard ["base", "momentum"].contains(encoder) else { throw ValidationError("--encoder must be base or momentum") }
    }

    func run() throws {
        let splits = try DatasetSource.open(data == "fashion-mnist" ? nil : data)
        guard let test = splits.test, test.isLabeled, splits.train.isLabeled else {
            throw ValidationError("\(splits.name) has no labeled held-out split (a val/ folder of class folders); kNN needs one")
        }
        let workers = ProcessInfo.processInfo.activeProcessorCount
        let evaluation = KNNEvaluation(k: k, temperature: t, workers: workers)
        let backend = try deviceOptions.makeBackend()
        let start = Date()
        let result: KNNEvaluation.Result
        var what = "raw pixels"
        if let checkpoint {
            let file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: checkpoint))
            let layout = try MoCoParameters(Checkpoint.config(from: file, temperature: 0.2))
            let values = try Checkpoint.initialValues(from: file, layout: layout)
            let parameters = try backend.makeTensor(values.parameters, shape: [values.parameters.count])
            let buffers = try backend.makeTensor(values.buffers, shape: [values.buffers.count])
            let extractor = try FeatureExtractor(
                layout: layout, parameterTensor: parameters, bufferTensor: buffers, backend: backend, batchSize: batchSize,
                encoderPrefix: encoder == "base" ? MoCoParameters.baseEncoderPrefix : MoCoParameters.momentumEncoderPrefix)
            result = try evaluation.accuracy(extractor: extractor, train: splits.train, test: test)
            what = "\(encoder) encoder of \(checkpoint)"
        } else {
            result = try evaluation.rawPixelAccuracy(train: splits.train, test: test, imageSize: imageSize, on: backend)
        }
        print(String(format: "kNN top-1 %.2f%% (k=%d, T=%g) of %@ on %@: %d train, %d test images, %.1f s on %@",
                     100 * result.top1, k, t, what, splits.name, splits.train.count, test.count, Date().timeIntervalSince(start),
                     backend.name))
        print(String(format: "  features %.1f s, classifier (similarities, top-k, vote) %.1f s", result.featureSeconds,
                     result.classifierSeconds))
        print(String(format: "{\"knn_top1\":%.6f,\"k\":%d,\"t\":%g}", result.top1, k, t))
    }
}

