import Model
import Tensors

/// The linear classifier on top of a feature: `logits = f·Wᵀ + b` (`nn.Linear(C, K)`), trained
/// with softmax cross-entropy, optionally behind a parameter-free BatchNorm (`--bn-head`, MAE's
/// `BatchNorm1d(C, affine=False, eps=1e-6)`). Every op runs on the backend; the host sees the
/// loss and the logits only.
///
/// The parameters live in one flat buffer, `head.weight` (K, C) then `head.bias` (K), with
/// their gradients and the optimizer's state in buffers of the same layout. A batch may be
/// shorter than `batchSize` (the last one of an epoch): every op then runs on the first
/// `count` rows.
public final class ClassifierHead {
    public let backend: any Backend
    /// C: the feature width.
    public let width: Int
    /// K: the classes.
    public let classes: Int
    public let batchSize: Int
    public let table: ParameterTable
    public let parameterTensor: Tensor
    public let gradientTensor: Tensor
    /// With `--bn-head`: `head_norm.running_mean`, `.running_var` (C each) and `.num_batches_tracked`.
    public let normalization: Normalization?
    let weight: Tensor, bias: Tensor, weightGradient: Tensor, biasGradient: Tensor
    let normalized: Tensor        // (B, C) BN output
    let logits: Tensor            // (B, K)
    let logitsGradient: Tensor    // (B, K)
    let losses: Tensor            // (B)
    let labels: Tensor            // (B) int32
    let targets: Tensor           // (B, K) soft targets (fine-tuning)

    /// The parameter-free BatchNorm before the head: its running statistics and saved batch
    /// statistics. Training steps normalise with the batch's (and update the running ones,
    /// momentum 0.1); evaluation with the running ones.
    public struct Normalization {
        public static let epsilon: Float = 1e-6
        public static let momentum: Float = 0.1
        public static let names = ["head_norm.running_mean", "head_norm.running_var", "head_norm.num_batches_tracked"]
        public let runningMean: Tensor, runningVariance: Tensor, batchesTracked: Tensor
        let savedMean: Tensor, savedReciprocalStd: Tensor, one: Tensor
    }

    /// A head with `nn.Linear`'s shapes; its values are set by ``load(weight:bias:)``.
    public init(backend: any Backend, width: Int, classes: Int, batchSize: Int, batchNorm: Bool) throws {
        guard width > 0, classes > 0, batchSize > 0 else {
            throw ModelConfigError("a classifier head needs a positive width, class count and batch size, "
                + "got \(width), \(classes), \(batchSize)")
        }
        self.backend = backend
        self.width = width
        self.classes = classes
        self.batchSize = batchSize
        let table = Self.layout(classes: classes, width: width)
        let (weightEntry, biasEntry) = (table.entries[0], table.entries[1])
        self.table = table
        parameterTensor = try backend.makeTensor(shape: [table.count])
        gradientTensor = try backend.makeTensor(shape: [table.count])
        try backend.fill(parameterTensor, value: 0)
        try backend.fill(gradientTensor, value: 0)
        weight = parameterTensor.view(offset: weightEntry.offset, shape: weightEntry.shape)
        bias = parameterTensor.view(offset: biasEntry.offset, shape: biasEntry.shape)
        weightGradient = gradientTensor.view(offset: weightEntry.offset, shape: weightEntry.shape)
        biasGradient = gradientTensor.view(offset: biasEntry.offset, shape: biasEntry.shape)
        normalized = try backend.makeTensor(shape: [batchSize, width])
        logits = try backend.makeTensor(shape: [batchSize, classes])
        logitsGradient = try backend.makeTensor(shape: [batchSize, classes])
        losses = try backend.makeTensor(shape: [batchSize])
        labels = try backend.makeTensor(shape: [batchSize], dtype: .int32)
        targets = try backend.makeTensor(shape: [batchSize, classes])
        if batchNorm {
            normalization = Normalization(
                runningMean: try backend.makeTensor([Float](repeating: 0, count: width), shape: [width]),
                runningVariance: try backend.makeTensor([Float](repeating: 1, count: width), shape: [width]),
                batchesTracked: try backend.makeTensor([Float(0)], shape: [1]),
                savedMean: try backend.makeTensor(shape: [width]), savedReciprocalStd: try backend.makeTensor(shape: [width]),
                one: try backend.makeTensor([Float(1)], shape: [1]))
        } else {
            normalization = nil
        }
    }

    /// `head.weight` (K, C), then `head.bias` (K), in one flat buffer.
    public static func layout(classes: Int, width: Int) -> ParameterTable {
        var table = ParameterTable()
        table.add("head.weight", shape: [classes, width])
        table.add("head.bias", shape: [classes])
        return table
    }

    /// The trainable tensors as optimizer segments (weight, bias).
    public var segments: SegmentTable { Self.segments(of: table) }

    public static func segments(of table: ParameterTable) -> SegmentTable {
        SegmentTable(table.entries.map { SegmentTable.Segment(offset: $0.offset, count: $0.count, adapted: $0.shape.count > 1) })
    }

    /// `main_lincls.py`'s init: weight N(0, 0.01), bias 0, drawn from `seed`.
    public static func initialWeight(classes: Int, width: Int, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed ^ 0x6865_6164_2e77_6569) // "head.wei"
        return (0..<(classes * width)).map { _ in Float(generator.nextGaussian()) * 0.01 }
    }

    public func load(weight values: [Float], bias biasValues: [Float]) throws {
        guard values.count == classes * width, biasValues.count == classes else {
            throw ModelConfigError("head values of \(values.count) and \(biasValues.count) elements for a (\(classes), \(width)) head")
        }
        try backend.upload(values, to: weight)
        try backend.upload(biasValues, to: bias)
    }

    /// head.weight and head.bias as host arrays.
    public func values() throws -> (weight: [Float], bias: [Float]) {
        let all = try backend.download(parameterTensor)
        let (w, b) = (table["head.weight"]!, table["head.bias"]!)
        return (Array(all[w.offset..<(w.offset + w.count)]), Array(all[b.offset..<(b.offset + b.count)]))
    }

    /// The BN head's running statistics (mean, variance, count), for a checkpoint.
    public func normalizationValues() throws -> [[Float]]? {
        try normalization.map { [try backend.download($0.runningMean), try backend.download($0.runningVariance),
                                 try backend.download($0.batchesTracked)] }
    }

    public func loadNormalization(_ values: [[Float]]) throws {
        guard let normalization, values.count == 3 else { return }
        try backend.upload(values[0], to: normalization.runningMean)
        try backend.upload(values[1], to: normalization.runningVariance)
        try backend.upload(values[2], to: normalization.batchesTracked)
    }

    /// Logits (count, K) of the first `count` rows of `features` (≥ count rows of C).
    func forward(features: Tensor, count: Int, training: Bool) throws -> Tensor {
        try checkRows(count)
        var input = features.view(offset: 0, shape: [count, width])
        if let normalization {
            let output = normalized.view(offset: 0, shape: [count, width])
            try backend.batchNormForward(output: output, savedMean: normalization.savedMean,
                                         savedReciprocalStd: normalization.savedReciprocalStd, input: input, weight: nil,
                                         bias: nil, runningMean: normalization.runningMean,
                                         runningVariance: normalization.runningVariance,
                                         momentum: Normalization.momentum, epsilon: Normalization.epsilon, training: training)
            if training { try backend.axpy(alpha: 1, x: normalization.one, y: normalization.batchesTracked) }
            input = output
        }
        let output = logits.view(offset: 0, shape: [count, classes])
        try backend.gemm(GEMMShape(m: count, n: classes, k: width, transposeB: true), alpha: 1, a: input, b: weight,
                         beta: 0, c: output)
        try backend.addBias(output, bias: bias)
        return output
    }

    /// The mean cross-entropy of the first `count` rows, and the head's gradients (overwritten).
    /// With `featureGradient`, also ∂loss/∂features (count, C) into it, for fine-tuning.
    public func lossAndGradients(features: Tensor, labels labelValues: [Int32], featureGradient: Tensor? = nil) throws -> Float {
        let count = labelValues.count
        let output = try forward(features: features, count: count, training: true)
        try labelValues.withUnsafeBytes { try backend.upload(bytes: $0, to: labels.view(offset: 0, shape: [count])) }
        return try backwardFromLogits(output, features: features, count: count, featureGradient: featureGradient) {
            try backend.softmaxCrossEntropy(losses: $0, logitsGradient: $1, logits: output,
                                            labels: labels.view(offset: 0, shape: [count]), scale: 1 / Float(count))
        }
    }

    /// The mean soft-target cross-entropy (mixup/cutmix/label smoothing) of the first
    /// `targets.count / K` rows, the head's gradients (overwritten) and, with `featureGradient`,
    /// ∂loss/∂features.
    public func lossAndGradients(features: Tensor, targets targetValues: [Float], featureGradient: Tensor? = nil) throws -> Float {
        let count = targetValues.count / classes
        let output = try forward(features: features, count: count, training: true)
        let targetView = targets.view(offset: 0, shape: [count, classes])
        try backend.upload(targetValues, to: targetView)
        return try backwardFromLogits(output, features: features, count: count, featureGradient: featureGradient) {
            try backend.softTargetCrossEntropy(losses: $0, logitsGradient: $1, logits: output, targets: targetView,
                                               scale: 1 / Float(count))
        }
    }

    /// Runs `loss(losses, logitsGradient)` (per-row losses already scaled to sum to the mean),
    /// then the backward of the head.
    func backwardFromLogits(_ output: Tensor, features: Tensor, count: Int, featureGradient: Tensor?,
                            loss: (Tensor, Tensor) throws -> Void) throws -> Float {
        let rowLosses = losses.view(offset: 0, shape: [count])
        let gradient = logitsGradient.view(offset: 0, shape: [count, classes])
        try loss(rowLosses, gradient)
        let input = normalization == nil ? features.view(offset: 0, shape: [count, width])
            : normalized.view(offset: 0, shape: [count, width])
        // dW (K, C) = dlogitsᵀ · f, db = Σ_rows dlogits (the flat gradient buffer is zeroed first: ops accumulate).
        try backend.fill(gradientTensor, value: 0)
        try backend.gemm(GEMMShape(m: classes, n: width, k: count, transposeA: true), alpha: 1, a: gradient, b: input,
                         beta: 0, c: weightGradient)
        try backend.sumRows(output: biasGradient, input: gradient)
        if let featureGradient {
            // Fine-tuning's head has no BatchNorm (only the probe's `--bn-head`, whose input is frozen).
            guard normalization == nil else {
                throw ModelConfigError("the gradient into the features is not defined for a BN head")
            }
            try backend.gemm(GEMMShape(m: count, n: width, k: classes), alpha: 1, a: gradient, b: weight, beta: 0,
                             c: featureGradient.view(offset: 0, shape: [count, width]))
        }
        return try backend.download(rowLosses).reduce(0, +)
    }

    /// The evaluation-mode logits (count × K) of the first `count` rows of `features`.
    public func logits(features: Tensor, count: Int) throws -> [Float] {
        try backend.download(try forward(features: features, count: count, training: false))
    }

    /// An evaluation batch (no statistics change): its logits as a host array (count × K) and
    /// the sum of its rows' cross-entropies.
    func evaluate(features: Tensor, labels labelValues: [Int32]) throws -> (logits: [Float], lossSum: Double) {
        let count = labelValues.count
        let output = try forward(features: features, count: count, training: false)
        let labelView = labels.view(offset: 0, shape: [count])
        try labelValues.withUnsafeBytes { try backend.upload(bytes: $0, to: labelView) }
        let rowLosses = losses.view(offset: 0, shape: [count])
        try backend.softmaxCrossEntropy(losses: rowLosses, logitsGradient: logitsGradient.view(offset: 0, shape: [count, classes]),
                                        logits: output, labels: labelView, scale: 1)
        return (try backend.download(output), try backend.download(rowLosses).reduce(0.0) { $0 + Double($1) })
    }

    /// Top-1, top-5 and the mean cross-entropy of `features` (rows of C, host) against `labels`,
    /// in evaluation mode, `batchSize` rows at a time through `staging` (B, C) on the device.
    func score(features: [Float], labels: [Int32], staging: Tensor, dataName: String) throws
        -> (top1: Double, top5: Double, loss: Double) {
        var hits = (top1: 0, topK: 0), lossSum = 0.0
        for first in stride(from: 0, to: labels.count, by: batchSize) {
            let count = min(batchSize, labels.count - first)
            let rows = Array(labels[first..<(first + count)])
            try backend.upload(Array(features[(first * width)..<((first + count) * width)]),
                               to: staging.view(offset: 0, shape: [count, width]))
            let (logits, loss) = try evaluate(features: staging, labels: rows)
            let batchHits = TopK.hits(logits: logits, labels: rows, classes: classes)
            hits.top1 += batchHits.top1
            hits.topK += batchHits.topK
            lossSum += loss
        }
        guard !labels.isEmpty else { throw PretrainError("no sample of the held-out split of \(dataName) could be read") }
        let total = Double(labels.count)
        return (Double(hits.top1) / total, Double(hits.topK) / total, lossSum / total)
    }

    func checkRows(_ count: Int) throws {
        guard count >= 1, count <= batchSize else {
            throw ModelConfigError("a head batch of \(count) rows; this head takes 1…\(batchSize)")
        }
    }
}

/// Top-k accuracy counting of a batch of logits.
public enum TopK {
    /// Whether `label`'s logit ranks among the `k` largest of `row`: fewer than k classes score
    /// higher, classes scoring equal counting as higher when their index is lower (a stable sort).
    public static func contains(_ row: ArraySlice<Float>, label: Int, k: Int) -> Bool {
        let target = row[row.startIndex + label]
        guard !target.isNaN else { return false }
        var above = 0
        for (offset, value) in row.enumerated() where value > target || (value == target && offset < label) {
            above += 1
            if above >= k { return false }
        }
        return true
    }

    /// How many rows of `logits` (rows × classes) have their label in the top 1 and the top `k`.
    public static func hits(logits: [Float], labels: [Int32], classes: Int, k: Int = 5) -> (top1: Int, topK: Int) {
        var (top1, topK) = (0, 0)
        for (row, label) in labels.enumerated() {
            let slice = logits[(row * classes)..<((row + 1) * classes)]
            if contains(slice, label: Int(label), k: 1) { top1 += 1 }
            if contains(slice, label: Int(label), k: min(k, classes)) { topK += 1 }
        }
        return (top1, topK)
    }
}
