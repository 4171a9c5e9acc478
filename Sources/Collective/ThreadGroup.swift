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

        /// Every rank's `values`, in rank order, timed as a collective.
        private func exchange<T>(_ values: [T], _ operation: String) throws -> [[T]] {
            let start = DispatchTime.now()
            defer { statistics.record(since: start, bytes: MemoryLayout<T>.stride * values.count) }
            let all = try group.exchange(values, rank: rank).map { $0 as! [T] }
            try Self.checkCounts(all.map(\.count), operation)
            return all
        }

        /// The element-wise sum of the ranks' arrays, added in rank order.
        private static func sum<T: FloatingPoint>(_ all: [[T]]) -> [T] {
            var total = all[0]
            total.withUnsafeMutableBufferPointer { total in
                for other in all.dropFirst() {
                    other.withUnsafeBufferPointer { other in
                        for i in total.indices { total[i] += other[i] }
                    }
                }
            }
            return total
        }

        func allReduceSum(_ values: inout [Float]) throws { values = Self.sum(try exchange(values, "allReduceSum")) }
        func allReduceSum(_ values: inout [Double]) throws { values = Self.sum(try exchange(values, "allReduceSum")) }
        func allGather(_ values: [Float]) throws -> [Float] { try exchange(values, "allGather").flatMap { $0 } }
        func allGather(_ values: [Int32]) throws -> [Int32] { try exchange(values, "allGather").flatMap { $0 } }

        func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] {
            let start = DispatchTime.now()
            defer { statistics.record(since: start, bytes: bytes.count) }
            return try group.exchange(bytes, rank: rank).map { $0 as! [UInt8] }
        }

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
