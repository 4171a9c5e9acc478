import Tensors
import Testing

@Suite struct BufferPoolTests {
    @Test func bucketsWasteAtMostAQuarter() {
        #expect(BufferPool.bucketSize(for: 1) == 256)
        #expect(BufferPool.bucketSize(for: 4096) == 4096)
        #expect(BufferPool.bucketSize(for: 4097) == 5120)
        for bytes in [5000, 65_537, 1_000_001, 123_456_789] {
            let bucket = BufferPool.bucketSize(for: bytes)
            #expect(bucket >= bytes && Double(bucket) <= Double(bytes) * 1.25 + 256, "bucket \(bucket) for \(bytes)")
        }
    }

    @Test func releasedStorageIsReusedAndSteadyStateAllocatesNothing() throws {
        let host = HostBackend()
        func step() throws {
            let a = try host.makeTensor(shape: [1000]), b = try host.makeTensor(shape: [64, 65])
            try host.fill(a, value: 1)
            try host.fill(b, value: 2)
        }
        try step()
        let afterFirst = host.pool.statistics
        #expect(afterFirst.driverAllocations == 2)
        for _ in 0..<3 { try step() }
        let steady = host.pool.statistics
        #expect(steady.driverAllocations == afterFirst.driverAllocations)
        #expect(steady.reuses == 6)
        host.pool.trim()
        #expect(host.pool.statistics.bytesAllocated == 0)
    }

    @Test func liveStorageIsNeverHandedOutTwice() throws {
        let host = HostBackend()
        let first = try host.makeTensor(shape: [100]), second = try host.makeTensor(shape: [100])
        #expect(first.storage.handle != second.storage.handle)
        try host.fill(first, value: 1)
        try host.fill(second, value: 2)
        #expect(try host.download(first).allSatisfy { $0 == 1 })
    }

    @Test func viewsAddressTheirOffset() throws {
        let host = HostBackend()
        let tensor = try host.makeTensor((0..<24).map(Float.init), shape: [2, 3, 4])
        let middle = tensor.view(offset: 12, shape: [3, 4])
        #expect(try host.download(middle) == (12..<24).map(Float.init))
        #expect(middle.reshaped([12]).shape == [12])
        #expect(middle.capacity == 12)
    }
}
