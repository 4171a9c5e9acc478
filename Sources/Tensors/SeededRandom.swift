/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, seedable generator, so every run,
/// test and benchmark is reproducible from its seed on any platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }
}

/// `count` values uniform in [low, high): never all zeros, so a kernel that ignores an input
/// cannot pass a comparison by accident.
public func randomValues<G: RandomNumberGenerator>(_ count: Int, in range: ClosedRange<Float> = -1...1,
                                                   using generator: inout G) -> [Float] {
    (0..<count).map { _ in Float.random(in: range, using: &generator) }
}
