import Foundation
import Tensors
import Testing

/// Seeded mutation fuzzing for the readers of untrusted bytes (safetensors, IDX and gzip, CIFAR,
/// PNG, JPEG, config and metrics JSON): each input is a valid seed file with 1–4 mutations (bit
/// flips, bytes and 32/64-bit words set to boundary values, truncation, insertion, a chunk
/// duplicated or removed). The test-suite budget is small; `tools/fuzz.sh` raises it with
/// MOCOV3_FUZZ_ITERATIONS and picks the seed with MOCOV3_FUZZ_SEED.
public struct Mutator {
    var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    static let bytes: [UInt8] = [0, 1, 0x7F, 0x80, 0xFE, 0xFF, 0x20, 0x22, 0x5B, 0x7B]
    static let words: [UInt64] = [0, 1, 0x7F, 0xFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF,
                                  0x7FFF_FFFF_FFFF_FFFF, 1 << 40, 60_000, 0xEA60_EA60]

    mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(generator.next() % UInt64(bound)) }

    /// One mutated copy of `seed`.
    public mutating func mutate(_ seed: [UInt8]) -> [UInt8] {
        var bytes = seed
        for _ in 0...below(4) {
            let position = below(bytes.count)
            switch below(7) {
            case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1) << UInt8(below(8))
            case 1 where !bytes.isEmpty: bytes[position] = Self.bytes[below(Self.bytes.count)]
            case 2 where bytes.count >= 8:
                let word = Self.words[below(Self.words.count)]
                let width = below(2) == 0 ? 4 : 8, start = min(position, bytes.count - width)
                let bigEndian = below(2) == 0
                for index in 0..<width {
                    let shift = bigEndian ? (width - 1 - index) * 8 : index * 8
                    bytes[start + index] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
                }
            case 3: bytes = Array(bytes.prefix(position))
            case 4: bytes.insert(contentsOf: (0..<(1 + below(16))).map { _ in UInt8(truncatingIfNeeded: generator.next()) },
                                 at: position)
            case 5 where !bytes.isEmpty:
                let length = min(1 + below(64), bytes.count - position)
                bytes.insert(contentsOf: bytes[position..<(position + length)], at: below(bytes.count))
            case 6 where !bytes.isEmpty:
                bytes.removeSubrange(position..<min(bytes.count, position + 1 + below(32)))
            default: break
            }
        }
        return bytes
    }
}

public enum FuzzBudget {
    /// Inputs per parser: MOCOV3_FUZZ_ITERATIONS when set (tools/fuzz.sh), else `standard`.
    public static func inputs(_ standard: Int) -> Int {
        ProcessInfo.processInfo.environment["MOCOV3_FUZZ_ITERATIONS"].flatMap(Int.init) ?? standard
    }

    public static var seed: UInt64 { ProcessInfo.processInfo.environment["MOCOV3_FUZZ_SEED"].flatMap(UInt64.init) ?? 1 }
}

/// What a fuzzing run saw.
public struct FuzzReport: CustomStringConvertible {
    public var name = ""
    public var inputs = 0
    public var accepted = 0
    public var rejected = 0
    public var slowest = 0.0
    /// The first words of each distinct error, with a count.
    public var errors: [String: Int] = [:]

    public var description: String {
        let common = errors.sorted { $0.value > $1.value }.prefix(4).map { "\($0.value)× «\($0.key)…»" }.joined(separator: ", ")
        return "fuzz \(name): \(inputs) inputs, \(accepted) accepted, \(rejected) rejected, slowest "
            + String(format: "%.1f ms", slowest * 1e3) + (common.isEmpty ? "" : "; most common errors: \(common)")
    }
}

/// Runs `body` on `count` mutations of the seeds. Records a failure for an error that does not
/// mention `mustMention` (the file's name), for an input that takes longer than `limit` seconds
/// (a hang), and never lets a thrown error escape. A crash ends the test process: with
/// MOCOV3_FUZZ_CRASH_DIR set, each input is written there first (`<name>.current`) to keep it.
public func fuzz(_ name: String, seeds: [[UInt8]], count: Int, mustMention: String, limit: Double = 2,
                 sourceLocation: SourceLocation = #_sourceLocation, _ body: ([UInt8]) throws -> Void) -> FuzzReport {
    var mutator = Mutator(seed: FuzzBudget.seed &+ UInt64(name.utf8.reduce(0) { $0 &* 31 &+ Int($1) } & 0xFFFF))
    var report = FuzzReport(name: name)
    let crashDirectory = ProcessInfo.processInfo.environment["MOCOV3_FUZZ_CRASH_DIR"]
    var reportedMessages = 0
    for index in 0..<count {
        let input = mutator.mutate(seeds[index % seeds.count])
        if let crashDirectory {
            try? Data(input).write(to: URL(fileURLWithPath: crashDirectory + "/\(name).current"))
        }
        let start = DispatchTime.now().uptimeNanoseconds
        do {
            try body(input)
            report.accepted += 1
        } catch {
            report.rejected += 1
            let text = "\(error)"
            report.errors[String(text.prefix(48)), default: 0] += 1
            if !text.contains(mustMention), reportedMessages < 5 {
                reportedMessages += 1
                Issue.record("fuzz \(name) input \(index): the error does not name \(mustMention): \(text)",
                             sourceLocation: sourceLocation)
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        report.slowest = max(report.slowest, seconds)
        if seconds > limit {
            Issue.record("fuzz \(name) input \(index) took \(seconds) s (limit \(limit) s)", sourceLocation: sourceLocation)
        }
        report.inputs += 1
    }
    print(report)
    return report
}
