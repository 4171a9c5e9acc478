import COpenBLAS
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
    /// Chunks per parallel loop: the active cores (2 on the development VM), or this process's
    /// share of them (``limitThreads(to:)``).
    nonisolated(unsafe) public private(set) static var chunkCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Limits this process to `threads` cores, its loops and OpenBLAS's: a data-parallel rank
    /// takes cores / ranks-per-machine, so the ranks of one machine do not oversubscribe it.
    /// Call it before the first step.
    public static func limitThreads(to threads: Int) {
        chunkCount = max(1, threads)
        openblas_set_num_threads(Int32(chunkCount))
    }

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

    /// Rows per block of ``orderedBlockSums(rows:width:_:)``: 64 K floats of a 768-wide input,
    /// enough to amortize the partials.
    public static let sumBlockRows = 256

    /// Sums over `rows` rows into `width` Double totals, deterministically on any machine: the rows
    /// are cut into fixed blocks of ``sumBlockRows`` (independent of the core count), `accumulate`
    /// adds each block's rows into that block's own zeroed partials (blocks run in parallel
    /// chunks), and the partials are then added block by block in order. The reductions of the
    /// host backward passes (bias, LayerNorm γ/β gradients) all go through here.
    public static func orderedBlockSums(rows: Int, width: Int,
                                        _ accumulate: (Range<Int>, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
        guard rows > 0, width > 0 else { return [Double](repeating: 0, count: max(width, 0)) }
        let block = sumBlockRows, blocks = (rows + block - 1) / block
        let partial = UnsafeMutablePointer<Double>.allocate(capacity: blocks * width)
        defer { partial.deallocate() }
        partial.initialize(repeating: 0, count: blocks * width)
        forEachChunk(count: blocks, minimumChunk: 1) { range in
            for b in range { accumulate((b * block)..<min(rows, (b + 1) * block), partial + b * width) }
        }
        for b in 1..<blocks {
            for i in 0..<width { partial[i] += partial[b * width + i] }
        }
        return Array(UnsafeBufferPointer(start: partial, count: width))
    }

    /// Runs `body` with OpenBLAS single-threaded: for ``forEachChunk`` loops whose chunks each call
    /// BLAS. OpenBLAS threads any GEMM with m·n·k above ~262 K, and two chunks each handing such a
    /// GEMM to its one shared thread pool at once serialize on its lock and spin (host attention
    /// ran 50× slower); with one BLAS thread per chunk, each chunk's own thread runs its GEMMs.
    /// The setting is process-wide while `body` runs.
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        let threads = openblas_get_num_threads()
        guard threads > 1, HostParallel.chunkCount > 1 else { return try body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(threads) }
        return try body()
    }

    /// Elements per chunk below which a streaming element-wise loop runs inline: ~64 KiB of
    /// floats, a few microseconds of work, about what waking a second thread costs.
    public static let elementwiseGrain = 16_384
}
