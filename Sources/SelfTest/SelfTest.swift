import Foundation
import Tensors

/// `mocov3-cl selftest`: every op of ``Backend`` on a device against the host backend at the
/// catalog's real and odd sizes, forward and backward, then whole MoCo iterations; how a user
/// decides whether a new GPU or driver computes right.
public struct SelfTest {
    public let device: any Backend
    public let reference: any Backend
    public var sizes: [CatalogSizes] = [.real, .odd]
    public var stepChecks: [MoCoStepCheck] = MoCoStepCheck.standard
    /// Only checks whose op name contains one of these (all when empty).
    public var operations: [String] = []

    public init(device: any Backend, reference: any Backend = HostBackend()) {
        self.device = device
        self.reference = reference
    }

    /// One line of the report.
    public struct Line {
        public let operation: String
        public let label: String
        public let passed: Bool
        /// Worst error/tolerance ratio (≤ 1 passes) and the largest error relative to an output's
        /// scale (``scaledError(_:_:)``).
        public let ratio: Double
        public let scaledError: Double
        public let seconds: Double
        /// Why it failed, in words (empty when it passed).
        public let problems: [String]
    }

    /// Runs every check, calling `report` after each, and returns the lines.
    public func run(report: (Line) -> Void = { _ in }) throws -> [Line] {
        var lines: [Line] = []
        func emit(_ line: Line) {
            lines.append(line)
            report(line)
        }
        for size in sizes {
            var catalog = OpCatalog(sizes: size)
            for check in try catalog.checks() where selected(check.operation) {
                let label = "\(size.name): \(check.label)"
                do {
                    let result = try check.compare(device, reference: reference)
                    let worst = result.worst
                    var problems = result.problems
                    for (index, comparison) in result.comparisons.enumerated() where !comparison.passed {
                        problems.append("output \(index): \(comparison) [rtol \(check.relative), atol \(check.absolute)]")
                    }
                    emit(Line(operation: check.operation, label: label, passed: result.passed,
                              ratio: worst?.comparison.ratio ?? 0,
                              scaledError: result.scaledError,
                              seconds: result.seconds, problems: problems))
                } catch {
                    emit(Line(operation: check.operation, label: label, passed: false, ratio: .infinity,
                              scaledError: .infinity, seconds: 0, problems: ["threw: \(error)"]))
                }
            }
        }
        for check in stepChecks where selected("moco step") {
            do {
                let result = try check.compare(device, reference: reference)
                emit(Line(operation: "moco step", label: "\(check.name), \(check.steps) steps; worst \(result.worst?.name ?? "-")",
                          passed: result.passed, ratio: result.worst?.comparison.ratio ?? 0,
                          scaledError: result.scaledError, seconds: result.seconds,
                          problems: result.failures))
            } catch {
                emit(Line(operation: "moco step", label: check.name, passed: false, ratio: .infinity,
                          scaledError: .infinity, seconds: 0, problems: ["threw: \(error)"]))
            }
        }
        return lines
    }

    func selected(_ operation: String) -> Bool {
        operations.isEmpty || operations.contains { operation.localizedCaseInsensitiveContains($0) }
    }

    /// Per op: the number of cases, whether all passed, and the worst ratio and scaled error.
    public static func summary(_ lines: [Line]) -> [(operation: String, cases: Int, passed: Bool, ratio: Double,
                                                    scaledError: Double)] {
        var order: [String] = []
        var byOperation: [String: [Line]] = [:]
        for line in lines {
            if byOperation[line.operation] == nil { order.append(line.operation) }
            byOperation[line.operation, default: []].append(line)
        }
        return order.map { operation in
            let group = byOperation[operation]!
            return (operation, group.count, group.allSatisfy(\.passed), group.map(\.ratio).max() ?? 0,
                    group.map(\.scaledError).max() ?? 0)
        }
    }
}
