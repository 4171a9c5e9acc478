@_exported import SelfTest
import Tensors
import Testing

/// Runs one op on a device backend and on the host with identical inputs, NaN-poisoned outputs
/// and canary tails (``OpCheck``, the machinery `mocov3-cl selftest` runs), then records a
/// failure for every output outside `|a − r| ≤ atol + rtol·|r|` (worst element reported) and for
/// every overwritten canary. Returns the host outputs for further checks.
@discardableResult
public func compareWithHost(_ device: any Backend, inputs: [OpInput], outputs: [OpOutput],
                            relative: Double = 1e-4, absolute: Double = 1e-5,
                            _ context: @autoclosure () -> String,
                            sourceLocation: SourceLocation = #_sourceLocation,
                            _ operation: @escaping (any Backend, [Tensor], [Tensor]) throws -> Void) throws -> [[Float]] {
    let check = OpCheck(context(), "", inputs: inputs, outputs: outputs, relative: relative, absolute: absolute, operation)
    let result = try check.compare(device, reference: HostBackend())
    for problem in result.problems { Issue.record("\(context()): \(problem)", sourceLocation: sourceLocation) }
    for (index, comparison) in result.comparisons.enumerated() where !comparison.passed {
        Issue.record("\(context()) output \(index): \(comparison) [rtol \(relative), atol \(absolute)]",
                     sourceLocation: sourceLocation)
    }
    return result.expected
}
