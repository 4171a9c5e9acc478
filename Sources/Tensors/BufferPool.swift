import Foundation

/// Reuses device allocations by size bucket, so that a training step allocates nothing from the
/// driver after its first iteration.
///
/// A request is rounded up to a bucket (multiples of 256 B up to 4 KiB, then four buckets per
/// power of two, so at most 25 % is wasted). A ``Storage`` returns its allocation here when it
/// is released; the next request of the same bucket takes it back. ``statistics`` counts driver
/// allocations versus reuses so tests can check the steady state allocates nothing.
public final class BufferPool {
    public struct Statistics: Sendable, Equatable {
        /// Allocations that went to the driver (or `malloc`).
        public var driverAllocations = 0
        /// Requests served from the cache.
        public var reuses = 0
        /// Bytes of all live allocations, in use or cached.
        public var bytesAllocated = 0
        /// Bytes cached and not in use.
        public var bytesCached = 0
    }

    private let allocateRaw: (Int) throws -> OpaquePointer
    private let freeRaw: (OpaquePointer) -> Void
    private var cached: [Int: [OpaquePointer]] = [:]
    private var stats = Statistics()
    private let lock = NSLock()

    /// - Parameters:
    ///   - allocate: makes a raw allocation of exactly the given byte count, or throws.
    ///   - free: releases a raw allocation made by `allocate`.
    public init(allocate: @escaping (Int) throws -> OpaquePointer, free: @escaping (OpaquePointer) -> Void) {
        self.allocateRaw = allocate
        self.freeRaw = free
    }

    deinit { trim() }

    public var statistics: Statistics { lock.withLock { stats } }

    /// The bucket a request of `byteCount` bytes is served from.
    public static func bucketSize(for byteCount: Int) -> Int {
        let bytes = max(byteCount, 1)
        if bytes <= 4096 { return (bytes + 255) / 256 * 256 }
        let power = 1 << (Int.bitWidth - 1 - bytes.leadingZeroBitCount)
        let step = power / 4
        return (bytes + step - 1) / step * step
    }

    /// A storage of at least `byteCount` bytes, reused when a released one of its bucket exists.
    /// When the driver refuses, the cache is freed and the allocation tried once more.
    public func storage(byteCount: Int) throws -> Storage {
        let bucket = Self.bucketSize(for: byteCount)
        let reused: OpaquePointer? = lock.withLock {
            guard let handle = cached[bucket]?.popLast() else { return nil }
            stats.reuses += 1
            stats.bytesCached -= bucket
            return handle
        }
        if let reused {
            return Storage(handle: reused, byteCount: byteCount, bucketBytes: bucket, pool: self)
        }
        let handle: OpaquePointer
        do {
            handle = try allocateRaw(bucket)
        } catch {
            trim()
            handle = try allocateRaw(bucket)
        }
        lock.withLock {
            stats.driverAllocations += 1
            stats.bytesAllocated += bucket
        }
        return Storage(handle: handle, byteCount: byteCount, bucketBytes: bucket, pool: self)
    }

    func recycle(_ handle: OpaquePointer, bucketBytes: Int) {
        lock.withLock {
            cached[bucketBytes, default: []].append(handle)
            stats.bytesCached += bucketBytes
        }
    }

    /// Frees every cached (unused) allocation.
    public func trim() {
        let released: [(Int, [OpaquePointer])] = lock.withLock {
            let all = cached.map { ($0.key, $0.value) }
            cached.removeAll()
            for (bucket, handles) in all {
                stats.bytesCached -= bucket * handles.count
                stats.bytesAllocated -= bucket * handles.count
            }
            return all
        }
        for (_, handles) in released { handles.forEach(freeRaw) }
    }
}
