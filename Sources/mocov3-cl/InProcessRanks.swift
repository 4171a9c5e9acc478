import ArgumentParser
import Collective
import Dispatch
import Foundation
import Tensors

/// `--ranks` of `pretrain` and `step`: data-parallel ranks as threads of this process on the host
/// backend (``ThreadGroup``), each with its own model replica, its slice of every batch and
/// cores / ranks threads for its loops and GEMMs. On this 2-core machine two single-threaded
/// ranks keep both cores busy where one model on two threads leaves one idle between its small
/// GEMMs (bench/RESULTS.md, issues 12 and 14).
enum InProcessRanks {
    /// The fewest images of the batch a rank keeps when the count is chosen for the user.
    static let minimumImagesPerRank = 32

    /// `requested` checked against the batch and the device, or the default: on the host
    /// backend one rank per core while each keeps ``minimumImagesPerRank`` images and the ranks
    /// split the batch evenly; elsewhere one.
    static func resolve(_ requested: Int?, batch: Int, device: DeviceOptions) throws -> Int {
        let onHost = try device.resolvedName() == "host"
        guard let requested else {
            guard onHost else { return 1 }
            let cores = ProcessInfo.processInfo.activeProcessorCount
            return (1...max(1, cores)).last { batch % $0 == 0 && batch / $0 >= minimumImagesPerRank } ?? 1
        }
        guard requested >= 1, requested <= 256 else { throw ValidationError("--ranks must lie in 1…256, got \(requested)") }
        guard requested == 1 || onHost else {
            throw ValidationError("--ranks \(requested) runs ranks as threads on the host backend only; "
                + "use --device host, or mpirun with one process per device")
        }
        guard batch % requested == 0 else {
            throw ValidationError("-b/--batch-size \(batch) does not split over --ranks \(requested); pick a multiple of \(requested)")
        }
        guard batch / requested >= 2 else {
            throw ValidationError("-b/--batch-size \(batch) leaves fewer than 2 images to each of --ranks \(requested) "
                + "(training-mode BatchNorm needs two); use fewer ranks")
        }
        return requested
    }

    /// The threads each of `ranks` ranks on this machine gets for its loops and GEMMs.
    static func threadsPerRank(_ ranks: Int) -> Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranks))
    }

    /// Runs `body` on `ranks` threads, each with its rank's communicator, and waits for all. The
    /// first rank that fails aborts the group (the others throw from their next collective) and
    /// its error is rethrown.
    static func run(_ ranks: Int, _ body: @escaping @Sendable (any Communicator) throws -> Void) throws {
        let group = ThreadGroup(size: ranks)
        let errors = FirstError()
        let done = DispatchSemaphore(value: 0)
        for rank in 0..<ranks {
            let thread = Thread {
                defer { done.signal() }
                do { try body(group.communicator(rank: rank)) } catch {
                    if errors.record(error) { group.abort(code: 1) }
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<ranks { done.wait() }
        if let error = errors.first { throw error }
    }
}

/// The first error of ranks that run as threads.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var error: (any Error)?

    /// Keeps `error` if it is the first; true then.
    func record(_ error: any Error) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard self.error == nil else { return false }
        self.error = error
        return true
    }

    var first: (any Error)? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }
}
