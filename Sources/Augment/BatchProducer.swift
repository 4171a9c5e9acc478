import Foundation

/// A background thread that makes batches `range` in order, at most `prefetch` ahead of the
/// consumer, so loading and augmentation overlap the training step (the role of PyTorch's
/// DataLoader workers and `prefetch_factor`). Shared by `TrainingBatches` and `EvalBatches`.
///
/// Stopping: `cancel()` (also called by the owner's deinit) wakes the producer, which exits
/// after the batch it is making; `cancel()` waits for that, so no thread outlives its owner.
final class BatchProducer<Batch>: @unchecked Sendable {
    private let condition = NSCondition()
    private var ready: [Batch] = []
    private var finished = false
    private var cancelled = false
    private var threadExited = false
    private var failure: (any Error)?
    private let prefetch: Int

    /// `make` runs on the producer thread only, one batch at a time.
    init(range: Range<Int>, prefetch: Int, make: @escaping (Int) throws -> Batch) {
        precondition(prefetch >= 1, "prefetch must be at least 1")
        self.prefetch = prefetch
        let thread = Thread { [self] in
            run(range: range, make: make)
        }
        thread.name = "mocov3-cl batch producer"
        thread.start()
    }

    private func run(range: Range<Int>, make: (Int) throws -> Batch) {
        defer {
            condition.lock()
            finished = true
            threadExited = true
            condition.broadcast()
            condition.unlock()
        }
        for batchIndex in range {
            condition.lock()
            while ready.count >= prefetch && !cancelled { condition.wait() }
            let stop = cancelled
            condition.unlock()
            if stop { return }
            do {
                let batch = try make(batchIndex)
                condition.lock()
                ready.append(batch)
                condition.broadcast()
                condition.unlock()
            } catch {
                condition.lock()
                failure = error
                condition.unlock()
                return
            }
        }
    }

    /// The next batch in order; nil after the last one or after `cancel()`. Rethrows the error
    /// that stopped the producer, once every batch made before it has been handed out.
    func next() throws -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        while ready.isEmpty && !finished && !cancelled { condition.wait() }
        if cancelled { return nil }
        if !ready.isEmpty {
            let batch = ready.removeFirst()
            condition.broadcast()
            return batch
        }
        if let failure {
            self.failure = nil
            throw failure
        }
        return nil
    }

    /// Stops the producer and waits for its thread to exit (at most the time of one batch).
    func cancel() {
        condition.lock()
        cancelled = true
        ready.removeAll()
        condition.broadcast()
        while !threadExited { condition.wait() }
        condition.unlock()
    }

    /// The producer's thread has exited (for tests).
    var isStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return threadExited
    }
}

/// Samples that could not be read, shared between the producer and the caller.
final class SkipLog: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var messages: [String] = []
    private var reported: Set<Int> = []

    /// Counts one replaced sample and records each failing index's error once.
    func record(replaced: Int, errors: [(index: Int, message: String)]) {
        lock.lock()
        defer { lock.unlock() }
        count += replaced
        for (index, message) in errors where reported.insert(index).inserted { messages.append(message) }
    }

    var skippedSamples: Int { lock.lock(); defer { lock.unlock() }; return count }
    var errorDescriptions: [String] { lock.lock(); defer { lock.unlock() }; return messages }
}

/// Runs `body(slot)` for every slot in `0..<count` on `workers` threads (slot i goes to worker
/// i mod workers). Outputs are per slot, so the result does not depend on the thread count.
func forEachSlot(_ count: Int, workers: Int, _ body: (Int) -> Void) {
    let workers = max(1, min(workers, count))
    if workers == 1 {
        for slot in 0..<count { body(slot) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        for slot in stride(from: worker, to: count, by: workers) { body(slot) }
    }
}
