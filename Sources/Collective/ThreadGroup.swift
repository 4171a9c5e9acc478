import Foundation

/// `size` ranks as threads of one process, for tests: each thread takes ``communicator(rank:)``
/// and runs the same code as an MPI rank would. Sums are taken in rank order, so every rank
/// gets bit-identical results, as from MPI.
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
    func abort(code: Int32) {
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
        var statistics: CollectiveStatistics { CollectiveStatistics() }

        func allReduceSum(_ values: inout [Float]) throws {
            let all = try group.exchange(values, rank: rank).map { $0 as! [Float] }
            try Self.checkCounts(all.map(\.count), "allReduceSum")
            values = all.dropFirst().reduce(all[0]) { zip($0, $1).map { $0 + $1 } }
        }

        func allReduceSum(_ values: inout [Double]) throws {
            let all = try group.exchange(values, rank: rank).map { $0 as! [Double] }
            try Self.checkCounts(all.map(\.count), "allReduceSum")
            values = all.dropFirst().reduce(all[0]) { zip($0, $1).map { $0 + $1 } }
        }

        func allGather(_ values: [Float]) throws -> [Float] {
            let all = try group.exchange(values, rank: rank).map { $0 as! [Float] }
            try Self.checkCounts(all.map(\.count), "allGather")
            return all.flatMap { $0 }
        }

        func allGather(_ values: [Int32]) throws -> [Int32] {
            let all = try group.exchange(values, rank: rank).map { $0 as! [Int32] }
            try Self.checkCounts(all.map(\.count), "allGather")
            return all.flatMap { $0 }
        }

        func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] {
            try group.exchange(bytes, rank: rank).map { $0 as! [UInt8] }
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
