import Foundation
import Tensors

/// How one tensor starts (SPEC A.2 init table, A.3 PyTorch defaults).
public enum InitializationRule: Equatable, Sendable {
    case zeros
    case ones
    /// `U(−bound, bound)`.
    case uniform(bound: Float)
    /// `normal(0, std)`.
    case normal(standardDeviation: Float)
    /// The fixed 2-D sin-cos table (SPEC A.2).
    case sinCos
}

extension MoCoParameters {
    /// The rule for a parameter entry; momentum-encoder entries get their base twin's rule
    /// (they are copies, SPEC A.5).
    public func initializationRule(for entry: ParameterTable.Entry) -> InitializationRule {
        let vit = config.vit
        var name = Substring(entry.name)
        var isHead = false
        if name.hasPrefix(Self.predictorPrefix) {
            name = name.dropFirst(Self.predictorPrefix.count)
            isHead = true
        } else {
            for prefix in [Self.baseEncoderPrefix, Self.momentumEncoderPrefix] where name.hasPrefix(prefix) {
                name = name.dropFirst(prefix.count)
            }
            isHead = name.hasPrefix("head.")
        }
        if isHead {
            // PyTorch defaults: Linear kaiming_uniform(a=√5) ⇒ U(±1/√fan_in); BN γ 1, β 0.
            if entry.shape.count == 2 { return .uniform(bound: Float(1 / Double(entry.shape[1]).squareRoot())) }
            return name.hasSuffix(".weight") ? .ones : .zeros
        }
        switch name {
        case "pos_embed": return .sinCos
        case "cls_token": return .normal(standardDeviation: 1e-6)
        case "patch_embed.proj.weight":
            // fan_in = 3·P², fan_out taken as C, not C·P² (vits.py; SPEC A.2).
            let fanIn = vit.channels * vit.patchSize * vit.patchSize
            return .uniform(bound: xavierBound(fanIn, vit.embedDim))
        default: break
        }
        if name.hasSuffix(".bias") { return .zeros }
        // LayerNorm γ (and ViT-BN's BatchNorm γ in norm2): 1.
        if entry.shape.count == 1 { return .ones }
        if name.hasSuffix("attn.qkv.weight") {
            // Xavier per Q/K/V slice: fan_out = 3C/3 (vits.py; SPEC A.2).
            return .uniform(bound: xavierBound(vit.embedDim, vit.embedDim))
        }
        // attn.proj, mlp.fc1, mlp.fc2: xavier_uniform_ on [out, in].
        precondition(entry.shape.count == 2, "no initialization rule for \(entry.name) \(entry.shape)")
        return .uniform(bound: xavierBound(entry.shape[1], entry.shape[0]))
    }

    /// Initial parameters and BN buffers, reproducible from `seed`.
    ///
    /// Each tensor draws from its own `SplitMix64`, seeded from `seed` and the tensor's name
    /// relative to its encoder, so a tensor's values do not depend on the layout order or on
    /// which other tensors exist. The momentum block is then one copy of the base block (SPEC
    /// A.5: "every base_encoder parameter is copied"); padding stays zero.
    public func initialValues(seed: UInt64) -> (parameters: [Float], buffers: [Float]) {
        var parameters = [Float](repeating: 0, count: table.count)
        for entry in table.entries where !momentumEncoder.contains(entry.offset) {
            var generator = SplitMix64(seed: seed ^ Self.nameHash(entry.name))
            let range = entry.offset..<(entry.offset + entry.count)
            switch initializationRule(for: entry) {
            case .zeros: break
            case .ones: parameters.replaceSubrange(range, with: repeatElement(1, count: entry.count))
            case .uniform(let bound):
                for index in range { parameters[index] = (2 * generator.nextUnitFloat() - 1) * bound }
            case .normal(let standardDeviation):
                for index in range { parameters[index] = Float(generator.nextGaussian()) * standardDeviation }
            case .sinCos:
                parameters.replaceSubrange(range, with: sinCosPositionEmbedding(grid: config.vit.grid, width: config.vit.embedDim))
            }
        }
        parameters.withUnsafeMutableBufferPointer { buffer in
            let base = UnsafeBufferPointer(rebasing: buffer[baseEncoder])
            _ = UnsafeMutableBufferPointer(rebasing: buffer[momentumEncoder]).update(fromContentsOf: base)
        }

        // running_mean 0, running_var 1, num_batches_tracked 0 (PyTorch BatchNorm defaults).
        var buffers = [Float](repeating: 0, count: self.buffers.count)
        for entry in self.buffers.entries where entry.name.hasSuffix(".running_var") {
            buffers.replaceSubrange(entry.offset..<(entry.offset + entry.count), with: repeatElement(1, count: entry.count))
        }
        return (parameters, buffers)
    }

    /// FNV-1a of the name without its encoder prefix, so base and momentum twins agree.
    static func nameHash(_ name: String) -> UInt64 {
        var relative = Substring(name)
        for prefix in [baseEncoderPrefix, momentumEncoderPrefix] where relative.hasPrefix(prefix) {
            relative = relative.dropFirst(prefix.count)
        }
        return relative.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }
}

/// `sqrt(6/(fanIn + fanOut))`, the xavier_uniform_ bound (PyTorch `nn.init`, gain 1).
func xavierBound(_ fanIn: Int, _ fanOut: Int) -> Float { Float((6 / Double(fanIn + fanOut)).squareRoot()) }

/// The fixed 2-D sin-cos position embedding, [1 + grid², width] row-major, class row zero
/// (SPEC A.2, `build_2d_sincos_position_embedding`, temperature 10000).
///
/// For patch token t, a = t / grid (row), b = t % grid (column), ω_k = 10000^(−k/(width/4)):
/// `pe[t] = [sin(a·ω), cos(a·ω), sin(b·ω), cos(b·ω)]`. Computed step by step in Float, as the
/// reference does in float32, so a checkpoint's table is matched to the last bit or two.
public func sinCosPositionEmbedding(grid: Int, width: Int) -> [Float] {
    precondition(width % 4 == 0, "sin-cos position embedding needs width divisible by 4")
    let quarter = width / 4
    let omega = (0..<quarter).map { 1 / powf(10_000, Float($0) / Float(quarter)) }
    var table = [Float](repeating: 0, count: (1 + grid * grid) * width)
    for token in 0..<(grid * grid) {
        let row = (1 + token) * width
        let (a, b) = (Float(token / grid), Float(token % grid))
        for k in 0..<quarter {
            table[row + k] = sinf(a * omega[k])
            table[row + quarter + k] = cosf(a * omega[k])
            table[row + 2 * quarter + k] = sinf(b * omega[k])
            table[row + 3 * quarter + k] = cosf(b * omega[k])
        }
    }
    return table
}

extension SplitMix64 {
    /// A standard normal draw by Box–Muller, in Double (one of the pair is discarded, which keeps
    /// the generator stateless beyond its seed).
    public mutating func nextGaussian() -> Double {
        let u1 = (Double(next() >> 11) + 1) * 0x1p-53 // (0, 1]: log stays finite
        let u2 = Double(next() >> 11) * 0x1p-53
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
