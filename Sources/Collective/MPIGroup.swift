import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Open MPI's `MPI_COMM_WORLD`, reached through `dlopen("libmpi.so.40")` at run time: the binary
/// links nothing of MPI, so it builds and runs as a single process where Open MPI is not
/// installed, and `mpirun -np N mocov3-cl …` finds the library the launcher's machine has.
///
/// Open MPI's handles are addresses of exported objects (`MPI_COMM_WORLD` is
/// `&ompi_mpi_comm_world`, `MPI_FLOAT` is `&ompi_mpi_float`, `MPI_SUM` is `&ompi_mpi_op_sum`,
/// `MPI_IN_PLACE` is `(void *) 1`), so `dlsym` gives them without `mpi.h`. MPICH and its
/// derivatives use integer handles: this loader refuses them by name.
///
/// Errors are fatal inside MPI (Open MPI's default `MPI_ERRORS_ARE_FATAL`): a failed collective
/// ends the job, and a rank that exits without `MPI_Finalize` makes `mpirun` end the others.
public final class MPIGroup: Communicator {
    typealias Handle = UnsafeMutableRawPointer
    typealias InitializedFunction = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    typealias InitFunction = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32
    typealias CommQueryFunction = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    typealias AllreduceFunction = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
    typealias AllgatherFunction = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle,
                                                  Handle) -> Int32
    typealias IallreduceFunction = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle,
                                                   UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> Int32
    typealias TestFunction = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutablePointer<Int32>,
                                             UnsafeMutableRawPointer?) -> Int32
    typealias WaitFunction = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutableRawPointer?) -> Int32
    typealias AbortFunction = @convention(c) (Handle, Int32) -> Int32
    typealias FinalizeFunction = @convention(c) () -> Int32

    public let rank: Int
    public let size: Int
    public let localRank: Int
    public let localSize: Int
    let world: Handle, float: Handle, double: Handle, int32: Handle, byte: Handle, sum: Handle
    let allreduceCall: AllreduceFunction
    let allgatherCall: AllgatherFunction
    let iallreduceCall: IallreduceFunction
    let testCall: TestFunction
    let waitCall: WaitFunction
    let abortCall: AbortFunction
    let finalizeCall: FinalizeFunction
    static let inPlace = UnsafeRawPointer(bitPattern: 1)
    public private(set) var statistics = CollectiveStatistics()

    /// The library names tried, in order (`MOCOV3_MPI_LIBRARY` first when set).
    static var libraryNames: [String] {
        let override = ProcessInfo.processInfo.environment["MOCOV3_MPI_LIBRARY"].map { [$0] } ?? []
        return override + ["libmpi.so.40", "libmpi.so"]
    }

    /// Loads Open MPI, initialises it (once per process) and reads this rank's place.
    public init() throws {
        var library: UnsafeMutableRawPointer?
        var failures: [String] = []
        for name in Self.libraryNames {
            // RTLD_GLOBAL: Open MPI's own plugins, loaded later, resolve their symbols against it.
            library = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
            if library != nil { break }
            failures.append(String(cString: dlerror()))
        }
        guard let library else {
            throw CollectiveError("this process was launched as one of \(ProcessGroup.launchedSize ?? 0) MPI ranks, but Open MPI's "
                + "library could not be loaded (\(failures.joined(separator: "; "))). Install Open MPI 4 or 5 "
                + "(Debian: apt-get install openmpi-bin libopenmpi-dev), or name the library with MOCOV3_MPI_LIBRARY")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let address = dlsym(library, name) else {
                throw CollectiveError("the MPI library has no \(name): only Open MPI is supported (MPICH and its derivatives "
                    + "use other handles); point MOCOV3_MPI_LIBRARY at Open MPI's libmpi.so.40")
            }
            return address
        }
        func function<F>(_ name: String, as type: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: type) }
        world = try symbol("ompi_mpi_comm_world")
        float = try symbol("ompi_mpi_float")
        double = try symbol("ompi_mpi_double")
        int32 = try symbol("ompi_mpi_int")
        byte = try symbol("ompi_mpi_byte")
        sum = try symbol("ompi_mpi_op_sum")
        allreduceCall = try function("MPI_Allreduce", as: AllreduceFunction.self)
        allgatherCall = try function("MPI_Allgather", as: AllgatherFunction.self)
        iallreduceCall = try function("MPI_Iallreduce", as: IallreduceFunction.self)
        testCall = try function("MPI_Test", as: TestFunction.self)
        waitCall = try function("MPI_Wait", as: WaitFunction.self)
        abortCall = try function("MPI_Abort", as: AbortFunction.self)
        finalizeCall = try function("MPI_Finalize", as: FinalizeFunction.self)
        var initialized: Int32 = 0
        _ = try function("MPI_Initialized", as: InitializedFunction.self)(&initialized)
        if initialized == 0 {
            let code = try function("MPI_Init", as: InitFunction.self)(nil, nil)
            guard code == 0 else { throw CollectiveError("MPI_Init failed with code \(code)") }
        }
        var value: Int32 = 0
        _ = try function("MPI_Comm_rank", as: CommQueryFunction.self)(world, &value)
        rank = Int(value)
        _ = try function("MPI_Comm_size", as: CommQueryFunction.self)(world, &value)
        size = Int(value)
        let environment = ProcessInfo.processInfo.environment
        localRank = environment["OMPI_COMM_WORLD_LOCAL_RANK"].flatMap(Int.init) ?? environment["PMIX_LOCAL_RANK"].flatMap(Int.init) ?? rank
        localSize = environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? environment["PMIX_LOCAL_SIZE"].flatMap(Int.init) ?? size
        atexit { MPIGroup.finalizeAtExit?() }
        MPIGroup.finalizeAtExit = { [finalizeCall] in _ = finalizeCall() }
    }

    nonisolated(unsafe) static var finalizeAtExit: (() -> Void)?

    static func check(_ code: Int32, _ operation: String) throws {
        guard code == 0 else { throw CollectiveError("\(operation) failed with MPI error code \(code)") }
    }

    static func count(_ n: Int, _ operation: String) throws -> Int32 {
        guard n <= Int(Int32.max) else { throw CollectiveError("\(operation) of \(n) elements: more than MPI's 2³¹ − 1 in one call") }
        return Int32(n)
    }

    func reduce<T>(_ values: inout [T], type: Handle) throws {
        let n = try Self.count(values.count, "MPI_Allreduce")
        let start = DispatchTime.now()
        let code = values.withUnsafeMutableBytes { allreduceCall(Self.inPlace, $0.baseAddress, n, type, sum, world) }
        statistics.record(since: start, bytes: MemoryLayout<T>.stride * values.count)
        try Self.check(code, "MPI_Allreduce")
    }

    public func allReduceSum(_ values: inout [Float]) throws { try reduce(&values, type: float) }
    public func allReduceSum(_ values: inout [Double]) throws { try reduce(&values, type: double) }

    public func startAllReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws -> any PendingReduction {
        let n = try Self.count(values.count, "MPI_Iallreduce")
        let request = Request(group: self)
        let start = DispatchTime.now()
        let code = iallreduceCall(Self.inPlace, values.baseAddress, n, float, sum, world, &request.handle)
        statistics.record(since: start, bytes: MemoryLayout<Float>.stride * values.count)
        try Self.check(code, "MPI_Iallreduce")
        return request
    }

    /// An `MPI_Request` (in Open MPI a pointer), polled with `MPI_Test` and finished with
    /// `MPI_Wait`; the time inside both counts as time in collectives (it is not hidden).
    final class Request: PendingReduction {
        let group: MPIGroup
        /// The handle MPI writes (MPI_Iallreduce) and reads (MPI_Test, MPI_Wait), by value.
        var handle: UnsafeMutableRawPointer?
        var complete = false
        init(group: MPIGroup) { self.group = group }

        func isComplete() throws -> Bool {
            guard !complete else { return true }
            var flag: Int32 = 0
            let start = DispatchTime.now()
            // MPI_STATUS_IGNORE is a null pointer in Open MPI.
            let code = group.testCall(&handle, &flag, nil)
            group.statistics.record(since: start, bytes: 0, call: false)
            try MPIGroup.check(code, "MPI_Test")
            complete = flag != 0
            return complete
        }

        func wait() throws {
            guard !complete else { return }
            let start = DispatchTime.now()
            let code = group.waitCall(&handle, nil)
            group.statistics.record(since: start, bytes: 0, call: false)
            try MPIGroup.check(code, "MPI_Wait")
            complete = true
        }
    }

    func gather<T>(_ values: [T], type: Handle, zero: T) throws -> [T] {
        // MPI's counts are per rank; the gathered whole may pass 2³¹ elements.
        let n = try Self.count(values.count, "MPI_Allgather")
        var result = [T](repeating: zero, count: values.count * size)
        let start = DispatchTime.now()
        let code = values.withUnsafeBytes { send in
            result.withUnsafeMutableBytes { allgatherCall(send.baseAddress, n, type, $0.baseAddress, n, type, world) }
        }
        statistics.record(since: start, bytes: MemoryLayout<T>.stride * values.count)
        try Self.check(code, "MPI_Allgather")
        return result
    }

    public func allGather(_ values: [Float]) throws -> [Float] { try gather(values, type: float, zero: 0) }
    public func allGather(_ values: [Int32]) throws -> [Int32] { try gather(values, type: int32, zero: 0) }

    public func allGatherBytes(_ bytes: [UInt8]) throws -> [[UInt8]] {
        let counts = try gather([Int32(try Self.count(bytes.count, "MPI_Allgather"))], type: int32, zero: 0).map(Int.init)
        let longest = counts.max() ?? 0
        let padded = bytes + [UInt8](repeating: 0, count: longest - bytes.count)
        let all = try gather(padded, type: byte, zero: 0)
        return counts.enumerated().map { rank, count in Array(all[(rank * longest)..<(rank * longest + count)]) }
    }

    public func abort(code: Int32) -> Never {
        _ = abortCall(world, code)
        exit(code)
    }
}
