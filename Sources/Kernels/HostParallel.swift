import Dispatch
import Foundation

/// A parallel-for for the host backend's non-GEMM loops.
///
/// OpenBLAS threads its own GEMMs; everything else in a training step (GELU, LayerNorm,
/// attention's softmax, the residual adds) used to run on one core while the others spun in
/// `sched_yield`. These loops are split into one contiguous chunk per active core and run with
/// `DispatchQueue.concurrentPerform`.
///
/// Determinism: chunk boundaries depend only on `count`, `minimumChunk` and the core count, never
/// on timing, and every caller writes disjoint outputs per chunk or reduces in a fixed order, so
/// a host run is bit-identical from run to run (the trainer's resume test relies on it).
public enum HostParallel {
    /// Chunks per parallel loop: the active cores (2 on the development VM).
    public static let chunkCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body` on contiguous, disjoint ranges covering `0..<count`, in parallel when there is
    /// enough work: at most ``chunkCount`` chunks, none shorter than `minimumChunk` (so small
    /// tensors run inline on the caller's thread, where dispatch would cost more than the loop).
    ///
    /// `body` must only write outputs that belong to its range.
    public static func forEachChunk(count: Int, minimumChunk: Int, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(chunkCount, count / max(1, minimumChunk))
        guard chunks > 1 else {
            body(0..<count)
            return
        }
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            body(bounds(chunk, of: chunks, count: count))
        }
    }

    /// Chunk `chunk` of `chunks` near-equal contiguous ranges of `0..<count`.
    static func bounds(_ chunk: Int, of chunks: Int, count: Int) -> Range<Int> {
        (chunk * count / chunks)..<((chunk + 1) * count / chunks)
    }

    /// Elements per chunk below which a streaming element-wise loop runs inline: ~64 KiB of
    /// floats, a few microseconds of work, about what waking a second thread costs.
    public static let elementwiseGrain = 16_384
}
