import Dispatch
import Collective
import Tensors
import Model

/// Data parallel: the ranks' gradients summed in buckets that start while the backward still
/// runs, as PyTorch's DDP does. The model reports each span of the flat gradient as soon as its
/// backward is done (the predictor first, the patch embedding last); consecutive spans are
/// gathered into a bucket of at least ``bucketBytes`` that is copied to the host and handed to a
/// non-blocking all-reduce at once, and every later report lets the library move the reductions
/// on. After the backward the remainder is started, every bucket waited for, and the sums copied
/// back in one upload.
///
/// `bucketBytes` 0 is one blocking all-reduce of the whole gradient after the backward (the
/// baseline the overlap is measured against). Buckets are cut from the spans in the order the
/// backward reports them, so every rank starts the same reductions in the same order.
final class GradientReduction {
    let model: MoCoModel
    let bucketBytes: Int
    /// The host copy of the gradient the reductions work in, allocated once.
    private let buffer: UnsafeMutableBufferPointer<Float>
    /// The span gathered for the next bucket, not started yet.
    private var gathering: Range<Int>?
    private var pending: [(span: Range<Int>, reduction: any PendingReduction)] = []
    /// Wall seconds spent after the backward finishing the reductions (the part not hidden).
    private(set) var exposedSeconds = 0.0
    /// Buckets started over the run.
    private(set) var buckets = 0

    init(model: MoCoModel, bucketBytes: Int) {
        self.model = model
        self.bucketBytes = bucketBytes
        buffer = .allocate(capacity: model.gradientTensor.count)
        buffer.initialize(repeating: 0)
    }

    deinit { buffer.deallocate() }

    /// The hook for ``MoCoModel/backward(x1:x2:finished:)``, or nil for the blocking baseline
    /// (made once, not per step).
    private(set) lazy var finished: ((Range<Int>) throws -> Void)? =
        bucketBytes > 0 ? { [unowned self] span in try self.report(span) } : nil

    private func report(_ span: Range<Int>) throws {
        if let current = gathering, current.lowerBound != span.upperBound {
            // Not adjacent (another model's order): what was gathered goes first.
            try start(current)
            gathering = nil
        }
        let span = gathering.map { span.lowerBound..<$0.upperBound } ?? span
        if span.count * MemoryLayout<Float>.stride >= bucketBytes {
            try start(span)
            gathering = nil
        } else {
            gathering = span
        }
        // Progress: Open MPI moves non-blocking collectives on inside its calls only.
        _ = try pending.first { !(try $0.reduction.isComplete()) }
    }

    private func start(_ span: Range<Int>) throws {
        guard !span.isEmpty else { return }
        let slice = UnsafeMutableBufferPointer(rebasing: buffer[span])
        try model.backend.download(model.gradientTensor.view(offset: span.lowerBound, shape: [span.count]), into: slice)
        pending.append((span, try model.communicator.startAllReduceSum(slice)))
        buckets += 1
    }

    /// After the backward: reduces what is left, waits for every bucket and puts the sums in
    /// the model's gradient.
    func complete() throws {
        let begin = DispatchTime.now()
        defer { exposedSeconds += Double(DispatchTime.now().uptimeNanoseconds - begin.uptimeNanoseconds) / 1e9 }
        let count = model.gradientTensor.count
        if bucketBytes == 0 {
            try start(0..<count)
        } else if let current = gathering {
            try start(current)
        }
        gathering = nil
        for (_, reduction) in pending { try reduction.wait() }
        let covered = pending.map(\.span.count).reduce(0, +)
        pending.removeAll(keepingCapacity: true)
        guard covered == count else {
            throw CollectiveError("the backward reported \(covered) of the gradient's \(count) elements as finished: the "
                + "gradient reduction would miss some (a defect of the model's backward; rerun with --bucket-mib 0)")
        }
        try model.backend.upload(UnsafeBufferPointer(buffer), to: model.gradientTensor)
    }
}
