import Tensors

/// Every random number of the augmentations comes from one `SplitMix64` per (sample, view),
/// seeded from (seed, epoch, index, view), so a view does not depend on the thread that made
/// it, on the order samples were made in, or on the batch a resumed run starts from.
public enum AugmentationSeed {
    /// SplitMix64's output mix (Steele, Lea & Flood 2014), used as a 64-bit hash step.
    @inlinable static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Hashes the words in order; each step mixes the running state with the next word, so
    /// (1, 2) and (2, 1) give different seeds.
    public static func hash(_ words: UInt64...) -> UInt64 {
        var state: UInt64 = 0x6d6f_636f_7633_636c // "mocov3cl"
        for word in words { state = mix(state ^ mix(word)) }
        return state
    }

    /// The generator for view `view` of sample `index` in epoch `epoch`.
    public static func generator(seed: UInt64, epoch: Int, index: Int, view: Int) -> SplitMix64 {
        SplitMix64(seed: hash(seed, UInt64(bitPattern: Int64(epoch)), UInt64(bitPattern: Int64(index)),
                              UInt64(bitPattern: Int64(view))))
    }

    /// The generator of the epoch's shuffle; the tag keeps it apart from every sample's stream.
    public static func shuffleGenerator(seed: UInt64, epoch: Int) -> SplitMix64 {
        SplitMix64(seed: hash(seed, UInt64(bitPattern: Int64(epoch)), 0x5348_5546_464c_45)) // "SHUFFLE"
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1) with 53 random bits. Written out rather than `Double.random(in:using:)`
    /// so the stream cannot change with the standard library.
    @inlinable public mutating func nextUnitDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in [low, high), as `random.uniform` / `torch.empty(1).uniform_`.
    @inlinable public mutating func uniform(_ low: Double, _ high: Double) -> Double {
        low + (high - low) * nextUnitDouble()
    }

    /// Uniform integer in `0..<bound` (Lemire's multiply-shift; bias below 2⁻³² for our bounds).
    @inlinable public mutating func integer(below bound: Int) -> Int {
        precondition(bound > 0, "integer(below:) needs a positive bound")
        return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// True with probability `probability` (`torch.rand(1) < p`): false for p = 0, true for p = 1.
    @inlinable public mutating func bernoulli(_ probability: Double) -> Bool {
        nextUnitDouble() < probability
    }

    /// A uniformly random permutation of `0..<count` (Fisher–Yates, as `torch.randperm`).
    public mutating func permutation(_ count: Int) -> [Int] {
        var values = Array(0..<count)
        var i = count - 1
        while i > 0 {
            values.swapAt(i, integer(below: i + 1))
            i -= 1
        }
        return values
    }
}
