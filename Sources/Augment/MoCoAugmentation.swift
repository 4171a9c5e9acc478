import Datasets
import Tensors

/// One of the two asymmetric pipelines of MoCo v3 (`main_moco.py`, the BYOL recipe, SPEC A.7):
/// crop, colour jitter, grayscale, blur, solarize, flip, normalise, in that order.
public struct AugmentationPipeline: Sendable {
    public var crop: RandomResizedCrop
    public var jitter = ColorJitter()
    public var jitterProbability = 0.8
    public var grayscaleProbability = 0.2
    public var blurProbability: Double
    public var blurSigma: ClosedRange<Double> = 0.1...2.0
    public var solarizeProbability: Double
    public var flipProbability = 0.5

    public init(crop: RandomResizedCrop, blurProbability: Double, solarizeProbability: Double) {
        self.crop = crop
        self.blurProbability = blurProbability
        self.solarizeProbability = solarizeProbability
    }

    /// Which optional steps one draw applied, for tests and logs.
    public struct Record: Sendable, Equatable {
        public var crop = CropBox(top: 0, left: 0, height: 0, width: 0)
        public var jitter: ColorJitter.Parameters?
        public var grayscale = false
        public var blurSigma: Double?
        public var solarize = false
        public var flip = false
    }

    /// Runs the pipeline on `image` (before normalisation), drawing from `generator` in a fixed
    /// order. Probabilistic steps draw their coin with `bernoulli` and their parameters only
    /// when applied, as torchvision's `RandomApply`.
    public func prepared(_ image: FloatImage, using generator: inout SplitMix64) -> (FloatImage, Record) {
        var record = Record()
        record.crop = crop.parameters(height: image.height, width: image.width, using: &generator)
        var view = image.resized(from: record.crop, height: crop.size, width: crop.size)
        if generator.bernoulli(jitterProbability) {
            let parameters = jitter.parameters(using: &generator)
            jitter.apply(parameters, to: &view)
            record.jitter = parameters
        }
        if generator.bernoulli(grayscaleProbability) {
            view.convertToGrayscale()
            record.grayscale = true
        }
        if generator.bernoulli(blurProbability) {
            let sigma = generator.uniform(blurSigma.lowerBound, blurSigma.upperBound)
            view.gaussianBlur(sigma: sigma)
            record.blurSigma = sigma
        }
        if generator.bernoulli(solarizeProbability) {
            view.solarize()
            record.solarize = true
        }
        if generator.bernoulli(flipProbability) {
            view.flipHorizontally()
            record.flip = true
        }
        return (view, record)
    }
}

/// The two views of MoCo v3 pre-training: pipeline 1 always blurs and never solarizes, pipeline
/// 2 blurs with p 0.1 and solarizes with p 0.2 (SPEC A.7). Both crop with scale (cropMin, 1);
/// `main_moco.py` defaults `--crop-min` to 0.08 (0.2 for the R50 commands).
public struct MoCoAugmentation: SampleAugmentation {
    public var imageSize: Int
    public var cropMin: Double
    /// Index 0 makes view 1, index 1 view 2.
    public var pipelines: [AugmentationPipeline]

    /// `blurScale` multiplies the blur's σ range, 0.1–2.0 px in the reference, whose views are
    /// 224 px: `imageSize / 224` keeps the blur the same fraction of a smaller view.
    public init(imageSize: Int, cropMin: Double = 0.08, blurScale: Double = 1) {
        precondition(imageSize > 0, "imageSize must be positive")
        precondition(cropMin > 0 && cropMin <= 1, "cropMin must be in (0, 1]")
        precondition(blurScale > 0, "blurScale must be positive")
        self.imageSize = imageSize
        self.cropMin = cropMin
        let crop = RandomResizedCrop(size: imageSize, scale: cropMin...1)
        pipelines = [
            AugmentationPipeline(crop: crop, blurProbability: 1.0, solarizeProbability: 0),
            AugmentationPipeline(crop: crop, blurProbability: 0.1, solarizeProbability: 0.2),
        ]
        for index in pipelines.indices {
            let sigma = pipelines[index].blurSigma
            pipelines[index].blurSigma = (sigma.lowerBound * blurScale)...(sigma.upperBound * blurScale)
        }
    }

    /// Number of floats one view holds: 3·S·S.
    public var outputCount: Int { 3 * imageSize * imageSize }

    public var viewCount: Int { 2 }

    public func augment(_ image: Image, seed: UInt64, epoch: Int, index: Int,
                        into views: [UnsafeMutableBufferPointer<Float>]) {
        augment(image, seed: seed, epoch: epoch, index: index, view1: views[0], view2: views[1])
    }

    /// Makes view `view` (0 or 1) of `image` with the draws of `generator` and writes its
    /// normalised (3, S, S) values into `output`.
    @discardableResult
    public func makeView(_ view: Int, of image: FloatImage, using generator: inout SplitMix64,
                         into output: UnsafeMutableBufferPointer<Float>) -> AugmentationPipeline.Record {
        precondition(view == 0 || view == 1, "MoCo v3 has views 0 and 1")
        let (result, record) = pipelines[view].prepared(image, using: &generator)
        result.normalized(into: output)
        return record
    }

    /// Both views of sample `index` in `epoch`, each from its own generator
    /// (`AugmentationSeed.generator`), written into `view1` and `view2` (3·S·S floats each).
    public func augment(_ image: Image, seed: UInt64, epoch: Int, index: Int,
                        view1: UnsafeMutableBufferPointer<Float>, view2: UnsafeMutableBufferPointer<Float>) {
        let source = FloatImage(image)
        var first = AugmentationSeed.generator(seed: seed, epoch: epoch, index: index, view: 0)
        makeView(0, of: source, using: &first, into: view1)
        var second = AugmentationSeed.generator(seed: seed, epoch: epoch, index: index, view: 1)
        makeView(1, of: source, using: &second, into: view2)
    }

    /// `augment` into two new arrays.
    public func augment(_ image: Image, seed: UInt64, epoch: Int, index: Int) -> (view1: [Float], view2: [Float]) {
        var a = [Float](repeating: 0, count: outputCount)
        var b = [Float](repeating: 0, count: outputCount)
        a.withUnsafeMutableBufferPointer { a in
            b.withUnsafeMutableBufferPointer { b in
                augment(image, seed: seed, epoch: epoch, index: index, view1: a, view2: b)
            }
        }
        return (a, b)
    }
}

/// What ``TrainingBatches`` asks of an augmentation: `viewCount` views of 3·S·S floats per
/// sample, a pure function of (seed, epoch, index), so batches do not depend on threads or on
/// where a resumed run starts.
public protocol SampleAugmentation: Sendable {
    /// Floats per view: 3·S·S.
    var outputCount: Int { get }
    /// Views per sample: 2 for MoCo v3, 1 for the classifiers.
    var viewCount: Int { get }
    /// Writes the views of sample `index` in `epoch` into `views` (`viewCount` buffers of `outputCount`).
    func augment(_ image: Image, seed: UInt64, epoch: Int, index: Int, into views: [UnsafeMutableBufferPointer<Float>])
}

/// The classifiers' training transform (`main_lincls.py`, SPEC A.8; DeiT's without RandAugment,
/// random erasing or colour jitter): `RandomResizedCrop(S, scale)` (0.08–1 by default), a
/// horizontal flip with p 0.5, normalise. One view, drawn from the view-0 generator of
/// (seed, epoch, index).
public struct ClassifierAugmentation: SampleAugmentation {
    public var crop: RandomResizedCrop
    public var flipProbability = 0.5

    public init(imageSize: Int, scale: ClosedRange<Double> = 0.08...1) {
        crop = RandomResizedCrop(size: imageSize, scale: scale)
    }

    public var outputCount: Int { 3 * crop.size * crop.size }
    public var viewCount: Int { 1 }

    /// The view before normalisation, drawn from `generator` (crop box, then the flip's coin).
    public func prepared(_ image: FloatImage, using generator: inout SplitMix64) -> FloatImage {
        var view = crop(image, using: &generator)
        if generator.bernoulli(flipProbability) { view.flipHorizontally() }
        return view
    }

    public func augment(_ image: Image, seed: UInt64, epoch: Int, index: Int,
                        into views: [UnsafeMutableBufferPointer<Float>]) {
        var generator = AugmentationSeed.generator(seed: seed, epoch: epoch, index: index, view: 0)
        prepared(FloatImage(image), using: &generator).normalized(into: views[0])
    }
}
