/// The worst element of a comparison `|a − r| ≤ atol + rtol·|r|`, as tests and `mocov3-cl check`
/// report it.
public struct ComparisonResult: CustomStringConvertible, Sendable {
    /// Index of the worst element (largest `|a − r| / (atol + rtol·|r|)`), or of the first NaN.
    public let index: Int
    public let actual: Float
    public let expected: Float
    /// `|a − r| / (atol + rtol·|r|)` at `index`; the comparison passes when ≤ 1. Infinity for NaN.
    public let ratio: Double
    /// Largest relative error `|a − r| / max(|r|, tiny)` over all elements, for the report.
    public let maxRelativeError: Double

    public var passed: Bool { ratio <= 1 }

    public var description: String {
        "worst element \(index): got \(actual), expected \(expected) "
            + "(error/tolerance \(ratio), max relative error \(maxRelativeError))"
    }
}

/// Compares `actual` with `expected` elementwise. A NaN or infinity in `actual` where `expected`
/// is finite fails; counts must match.
public func worstError(_ actual: [Float], _ expected: [Float], relative: Double, absolute: Double) -> ComparisonResult {
    precondition(actual.count == expected.count, "comparing \(actual.count) values with \(expected.count)")
    var worst = ComparisonResult(index: 0, actual: actual.first ?? 0, expected: expected.first ?? 0, ratio: 0,
                                 maxRelativeError: 0)
    var maxRelative = 0.0
    for i in actual.indices {
        let a = Double(actual[i]), r = Double(expected[i])
        let difference = abs(a - r)
        let ratio = a.isFinite || !r.isFinite ? (a == r ? 0 : difference / (absolute + relative * abs(r))) : .infinity
        maxRelative = max(maxRelative, difference / max(abs(r), 1e-30))
        if ratio > worst.ratio || (ratio.isNaN && !worst.ratio.isNaN) {
            worst = ComparisonResult(index: i, actual: actual[i], expected: expected[i],
                                     ratio: ratio.isNaN ? .infinity : ratio, maxRelativeError: 0)
        }
    }
    return ComparisonResult(index: worst.index, actual: worst.actual, expected: worst.expected, ratio: worst.ratio,
                            maxRelativeError: maxRelative)
}
