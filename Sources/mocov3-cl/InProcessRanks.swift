import ArgumentParser
import Foundation
import Tensors

/// `--ranks` of `pretrain` and `step`: data-parallel ranks as threads of this process on the host
/// backend (``ThreadGroup``), each with its own model replica, its slice of every batch and
/// cores / ranks threads for its loops and GEMMs. On a 2-core machine two single-threaded ranks
/// keep both cores computing where one model on two threads loses ~30 % of the time between its
/// GEMMs, its OpenBLAS threads spinning in `sched_yield` (1.2–1.3× on this machine:
/// bench/RESULTS.md, issue 12). The ranks run on ``ThreadGroup/run(_:_:)``.
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
}
