import Foundation

/// When `pretrain` writes mid-epoch checkpoints besides the one at every epoch end (`--save-every`,
/// `--keep`): a crash, `kill -9` or node failure loses at most the iterations since the last save.
/// Not part of the run's configuration: a resumed run may save more or less often.
public struct SavePolicy: Sendable, Equatable, CustomStringConvertible {
    public enum Interval: Sendable, Equatable {
        /// Every N iterations.
        case iterations(Int)
        /// Once this many seconds of training have passed since the last save.
        case seconds(Double)
        /// Only at epoch ends (and on Ctrl-C).
        case never
    }

    public var interval: Interval
    /// How many mid-epoch checkpoints to keep (the newest); epoch-end checkpoints are all kept.
    public var keep: Int

    /// Every 10 minutes, the newest 2 kept: cheap next to a step on any dataset worth saving for.
    public static let `default` = SavePolicy(interval: .seconds(600), keep: 2)

    public init(interval: Interval, keep: Int) {
        self.interval = interval
        self.keep = keep
    }

    /// `--save-every`: an iteration count (`500`), a duration (`90s`, `10m`, `2h`), or `0`/`never`.
    public init(parsing text: String, keep: Int) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard keep >= 1 else { throw PretrainError("--keep must be at least 1, got \(keep)") }
        self.keep = keep
        if trimmed == "0" || trimmed == "never" {
            interval = .never
        } else if let count = Int(trimmed) {
            guard count > 0 else { throw PretrainError("--save-every must be positive, 0 or never, got \(text)") }
            interval = .iterations(count)
        } else if let unit = trimmed.last, let scale = ["s": 1.0, "m": 60, "h": 3600][String(unit)],
                  let value = Double(trimmed.dropLast()), value > 0, value.isFinite {
            interval = .seconds(value * scale)
        } else {
            throw PretrainError("--save-every takes an iteration count (500), a duration (90s, 10m, 2h) or never; got '\(text)'")
        }
    }

    /// Whether a mid-epoch save is due after `iterations` iterations and `seconds` of training
    /// since the last save.
    public func isDue(iterations: Int, seconds: Double) -> Bool {
        switch interval {
        case .iterations(let count): return iterations >= count
        case .seconds(let limit): return seconds >= limit
        case .never: return false
        }
    }

    public var description: String {
        switch interval {
        case .iterations(let count): return "every \(count) iterations, keeping the newest \(keep)"
        case .seconds(let seconds): return "every \(Int(seconds)) s, keeping the newest \(keep)"
        case .never: return "at epoch ends only"
        }
    }
}
