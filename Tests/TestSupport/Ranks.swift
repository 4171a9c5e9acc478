import Collective
import Foundation

/// Runs `body(rank, communicator)` on `size` threads standing in for data-parallel ranks
/// (``ThreadGroup``, the collectives an MPI rank calls) and returns their results by rank; the
/// first rank's error is rethrown. Expectations belong after it, on the test's own thread.
public func onRanks<T>(_ size: Int, _ body: @escaping @Sendable (Int, any Communicator) throws -> T) throws -> [T] {
    let group = ThreadGroup(size: size)
    let results = Locked<[Int: Result<T, any Error>]>([:])
    let threads = (0..<size).map { rank in
        Thread {
            let result = Result { try body(rank, group.communicator(rank: rank)) }
            results.update { $0[rank] = result }
        }
    }
    for thread in threads { thread.stackSize = 8 << 20; thread.start() }
    while results.value.count < size { usleep(1_000) }
    return try (0..<size).map { try results.value[$0]!.get() }
}
