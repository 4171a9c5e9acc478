import Foundation

/// A value behind a lock: what threads standing in for data-parallel ranks report back.
public final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    public init(_ value: T) { stored = value }
    public var value: T {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
    public func update(_ body: (inout T) -> Void) {
        lock.lock()
        body(&stored)
        lock.unlock()
    }
}
