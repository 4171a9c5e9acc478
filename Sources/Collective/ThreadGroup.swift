import Dispatch
import Foundation

/// `size` ranks as threads of one process: each thread takes ``communicator(rank:)`` and runs
/// the same code as an MPI rank would (`pretrain --ranks` on the host backend, and the tests).
/// Sums are taken in rank order, so every rank gets bit-identical results, as from MPI.
public final class ThreadGroup: @unchecked Sendable {
    public let size: Int
    private let condition = NSCondition()
    private var slots: [Any?]
    private var arrived = 0
    private var generation = 0
    private var result: [Any] = []
    private var aborted: Int32?

    public init(size: Int) {
        precondition(size >= 1, "a group needs at least one rank")
        self.size = size
        slots = Array(repeating: nil, count: size)
    }

    public func communicator(rank: Int) -> any Communicator { Member(group: self, rank: rank) }

    /// Runs `body(rank, communicator)` for every rank on its own thread (8 MiB stack) and returns
    /// the results in rank order once all have ended. The first rank that throws aborts the
    /// group, so the others throw from their next collective instead of waiting in it, and its
    /// error is rethrown.
    public static func run<T>(_ size: Int, _ body: @escaping @Sendable (Int, any Communicator) throws -> T) throws -> [T] {
        let group = ThreadGroup(size: size)
        let lock = NSLock()
        nonisolated(unsafe) var results = [T?](repeating: nil, count: size)
        nonisolated(unsafe) var firstError: (any Error)?
        let done = DispatchSemaphore(value: 0)
        for rank in 0..<size {
            let thread = Thread {
                defer { done.signal() }
                do {
                    let result = try body(rank, group.communicator(rank: rank))
                    lock.withLock { results[rank] = result }
                } catch {
                    let first = lock.withLock { () -> Bool in
                        defer { if firstError == nil { firstError = error } }
                        return firstError == nil
                    }
                    if first { group.abort(code: 1) }
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<size { done.wait() }
        if let firstError { throw firstError }
        return results.map { $0! }
    }

    /// Every rank's `value`, in rank order, once all have arrived.
    func exchange(_ value: Any, rank: Int) throws -> [Any] {
        condition.lock()
        defer { condition.unlock() }
        if let code = aborted { throw CollectiveError("rank \(rank): another rank aborted the group (code \(code))") }
        slots[rank] = value
        arrived += 1
        let mine = generation
        if arrived == size {
            result = slots.map { $0! }
            slots = Array(repeating: nil, count: size)
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine && aborted == nil { condition.wait() }
            if let code = aborted { throw CollectiveError("rank \(rank): another rank aborted the group (code \(code))") }
        }
        return result
    }

    /// Marks the group aborted: every rank waiting in (or entering) a collective throws.
    public func abort(code: Int32) {
        condition.lock()
        aborted = code
        condition.broadcast()
        condition.unlock()
    }

    final class Member: Communicator {
        let group: ThreadGroup
        let rank: Int
        init(group: ThreadGroup, rank: Int) {
            self.group = group
            self.rank = rank
        }
        var size: Int { group.size }
        var localRank: Int { rank }
        var localSize: Int { group.size }
        private(set) var statistics = CollectiveStatistics()

        /// Every rank's `values`, in rank order, timed as a collective; with `operation`, the
        /// counts must agree.
        private func exchange<T>(_ values: [T], _ operation: String?) throws -> [[T]] {
            let start = DispatchTime.now()
            defer { statistics.record(since: start, bytes: MemoryLayout<T>.stride * values.count) }
            let all = try group.exchange(values, rank: rank).map { $0 as! [T] }
            if let operation { try Self.checkCounts(all.map(\.count), operation) }
            return all
        }

        /// Sums `values` over the ranks in place: every rank's buffer is shared for the call, rank
        /// r adds up its own chunk of the elements (in rank order, so the bits of MPI's sum of two)
        /// and writes it into every rank's buffer, and a second meeting keeps the buffers alive
        /// until all chunks are written. Nothing is copied or allocated per element.
        private func sumInPlace<T: FloatingPoint>(_ values: UnsafeMutableBufferPointer<T>) throws {
            let start = DispatchTime.now()
            defer { statistics.record(since: start, bytes: MemoryLayout<T>.stride * values.count) }
            let shared = try group.exchange(values, rank: rank).map { $0 as! UnsafeMutableBufferPointer<T> }
            try Self.checkCounts(shared.map(\.count), "allReduceSum")
            let chunk = (values.count + size - 1) / size
            for i in min(rank * chunk, values.count)..<min((rank + 1) * chunk, values.count) {
                var total = shared[0][i]
                for other in shared.dropFirst() { total += other[i] }
                for buffer in shared { buffer[i] = total }
            }
            _ = try group.exchange((), rank: rank)
        }

        func allReduceSum(_ values: inout [Float]) throws { try values.withUnsafeMutableBufferPointer { try sumInPlace($0) } }
        func allReduceSum(_ values: inout [Double]) throws { try values.withUnsafeMutableBufferPointer { try sumInPlace($0) } }

        func startAllReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws -> any PendingReduction {
            try sumInPlace(values)
            return CompletedReduction()
        }

        func allGather(_ values: [Float]) throws -> [Float] { try exchange(values, "allGather").flatMap { $0 } }
        func allGather(_ values: [Int32]) throws -> [Int32] { try exchange(values, "allGather").flatMap { $0 } }

        func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] { try exchange(bytes, nil) }

        func abort(code: Int32) -> Never {
            group.abort(code: code)
            // A thread cannot end the process for the test: it parks until the test ends.
            while true { sleep(3600) }
        }

        static func checkCounts(_ counts: [Int], _ operation: String) throws {
            guard Set(counts).count == 1 else {
                throw CollectiveError("\(operation) with different counts on the ranks: \(counts)")
            }
        }
    }
}
