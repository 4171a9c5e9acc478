import Foundation

/// A group of processes training one model together (data parallel): each rank holds a slice of
/// every global batch, and these collectives make the ranks' computations one. The model uses
/// them for the keys of the contrastive loss and for SyncBN; the trainer for the gradients, the
/// monitors and the checks that the ranks agree. ``SingleProcess`` is the default; ``MPIGroup``
/// is Open MPI, loaded at run time (a binary built without Open MPI runs a single process);
/// ``ThreadGroup`` runs ranks as threads of one process (`--ranks`, and the tests).
///
/// Every rank must call the same collectives in the same order with the same counts.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Where this process sits among the ranks on its machine (devices and threads are per machine).
    var localRank: Int { get }
    var localSize: Int { get }
    /// Element-wise sums over all ranks, in place; every rank receives the same values.
    func allReduceSum(_ values: inout [Float]) throws
    func allReduceSum(_ values: inout [Double]) throws
    /// Starts an element-wise sum over all ranks in place, without waiting for it: the caller
    /// keeps `values` alive and untouched until the returned reduction is complete. Every rank
    /// starts the same reductions in the same order. (The default runs it to completion at once.)
    func startAllReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws -> any PendingReduction
    /// Every rank's `values` (the same count on each), concatenated in rank order.
    func allGather(_ values: [Float]) throws -> [Float]
    func allGather(_ values: [Int32]) throws -> [Int32]
    /// Every rank's bytes, in rank order (counts may differ: each is sent first).
    func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]]
    /// Ends every rank of the job with `code` (after this rank printed why): a rank that fails
    /// must not leave the others waiting in a collective.
    func abort(code: Int32) -> Never
    /// Wall seconds this rank has spent inside collectives, and the bytes it sent into them.
    var statistics: CollectiveStatistics { get }
}

/// A reduction started by ``Communicator/startAllReduceSum(_:)``.
public protocol PendingReduction: AnyObject {
    /// True once the sum is in the buffer; each call also lets the library move the reduction on
    /// (Open MPI progresses non-blocking collectives inside its calls).
    func isComplete() throws -> Bool
    /// Blocks until the sum is in the buffer.
    func wait() throws
}

/// A reduction that was complete when it was started.
final class CompletedReduction: PendingReduction {
    func isComplete() throws -> Bool { true }
    func wait() throws {}
}

/// What a rank's collectives cost so far (the trainer reports it at the end of a run).
public struct CollectiveStatistics: Sendable {
    public var seconds = 0.0
    public var bytes = 0
    public var calls = 0
    public init() {}

    /// Time since `start` inside a collective; `bytes` and a call when the collective begins there.
    mutating func record(since start: DispatchTime, bytes: Int, call: Bool = true) {
        seconds += Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        self.bytes += bytes
        if call { calls += 1 }
    }
}

extension Communicator {
    public var isDistributed: Bool { size > 1 }

    public func startAllReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws -> any PendingReduction {
        var copy = Array(values)
        try allReduceSum(&copy)
        _ = copy.withUnsafeBufferPointer { values.update(fromContentsOf: $0) }
        return CompletedReduction()
    }

    /// "rank 1/2: " in a distributed run, "" otherwise: the prefix of a rank's own messages.
    public var messagePrefix: String { isDistributed ? "rank \(rank)/\(size): " : "" }
}

/// An error of the process group: what failed, on which rank, and what to do.
public struct CollectiveError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public var localSize: Int { 1 }
    public func allReduceSum(_ values: inout [Float]) throws {}
    public func allReduceSum(_ values: inout [Double]) throws {}
    public func allGather(_ values: [Float]) throws -> [Float] { values }
    public func allGather(_ values: [Int32]) throws -> [Int32] { values }
    public func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func abort(code: Int32) -> Never { exit(code) }
    public var statistics: CollectiveStatistics { CollectiveStatistics() }
}

/// The process group this process was launched into: Open MPI's when `mpirun` (or a launcher
/// that sets Open MPI's or PMIx's variables) started more than one process, else a single process.
public enum ProcessGroup {
    /// The number of processes the launcher says it started, if any launched this one.
    public static var launchedSize: Int? {
        let environment = ProcessInfo.processInfo.environment
        for key in ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"] {
            if let size = environment[key].flatMap(Int.init) { return size }
        }
        return nil
    }

    /// ``MPIGroup`` under a multi-process launch, else ``SingleProcess``.
    public static func fromEnvironment() throws -> any Communicator {
        guard let size = launchedSize, size > 1 else { return SingleProcess() }
        return try MPIGroup()
    }
}
