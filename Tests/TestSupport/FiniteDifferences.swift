import Tensors
import Testing

/// Central-difference gradient of a scalar function, in Double: `(f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h`.
/// Every backward pass is checked against this on tiny shapes.
public func numericalGradient(of function: ([Double]) -> Double, at point: [Double], step: Double = 1e-5) -> [Double] {
    var x = point
    return point.indices.map { i in
        x[i] = point[i] + step
        let plus = function(x)
        x[i] = point[i] - step
        let minus = function(x)
        x[i] = point[i]
        return (plus - minus) / (2 * step)
    }
}

/// Compares an analytic gradient with central differences (`|a − n| ≤ atol + rtol·|n|`) and
/// records the worst element on mismatch.
public func expectGradientMatches(_ analytic: [Double], _ numerical: [Double], relative: Double = 1e-5,
                                  absolute: Double = 1e-7, _ context: @autoclosure () -> String = "",
                                  sourceLocation: SourceLocation = #_sourceLocation) {
    guard analytic.count == numerical.count else {
        Issue.record("\(context()): \(analytic.count) analytic vs \(numerical.count) numerical values",
                     sourceLocation: sourceLocation)
        return
    }
    var worst = (index: -1, ratio: 0.0)
    for i in analytic.indices {
        let ratio = abs(analytic[i] - numerical[i]) / (absolute + relative * abs(numerical[i]))
        if !(ratio <= worst.ratio) { worst = (i, ratio.isNaN ? .infinity : ratio) }
    }
    if worst.ratio > 1 {
        let message = "\(context()): gradient element \(worst.index) analytic \(analytic[worst.index]) vs "
            + "numerical \(numerical[worst.index]) (error/tolerance \(worst.ratio))"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
}

/// Seeded Doubles in [low, high), for finite-difference checks.
public func randomDoubles(_ count: Int, in range: ClosedRange<Double> = -1...1, seed: UInt64) -> [Double] {
    var generator = Tensors.SplitMix64(seed: seed)
    return (0..<count).map { _ in Double.random(in: range, using: &generator) }
}

/// Seeded input, weight (in [0.5, 1.5]) and bias of a normalization layer over (rows, columns),
/// for finite-difference checks; `center` 100 checks that the math does not rely on inputs near 0.
public struct NormalizationPoint {
    public var input: [Double]
    public var weight: [Double]
    public var bias: [Double]

    public init(rows: Int, columns: Int, center: Double) {
        input = randomDoubles(rows * columns, in: (center - 1)...(center + 1), seed: 1)
        weight = randomDoubles(columns, in: 0.5...1.5, seed: 2)
        bias = randomDoubles(columns, seed: 3)
    }
}
