/// The layout of every parameter tensor inside one flat buffer: name, offset, shape and whether
/// the optimizer updates it.
///
/// Keeping all parameters contiguous makes the optimizer, the momentum (EMA) update and
/// checkpoints single passes over one buffer (llm.c's habit), while the table keeps the
/// reference's checkpoint names (`module.base_encoder.blocks.0.attn.qkv.weight`, …) for
/// interchange with PyTorch/timm.
public struct ParameterTable: Sendable {
    public struct Entry: Equatable, Sendable {
        public let name: String
        /// First element inside the flat buffer.
        public let offset: Int
        public let shape: [Int]
        /// False for frozen tensors (`pos_embed`, a stop-grad patch projection).
        public let trainable: Bool

        public var count: Int { shape.reduce(1, *) }
    }

    public private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]
    /// Elements in the whole buffer; each entry starts at a multiple of ``alignment``.
    public private(set) var count = 0
    /// Entry alignment in elements (64 bytes), so vector kernels can address any tensor whole.
    public static let alignment = 16

    public init() {}

    /// Appends a tensor; names must be unique.
    @discardableResult
    public mutating func add(_ name: String, shape: [Int], trainable: Bool = true) -> Entry {
        precondition(index[name] == nil, "duplicate parameter name \(name)")
        let entry = Entry(name: name, offset: count, shape: shape, trainable: trainable)
        index[name] = entries.count
        entries.append(entry)
        count += (entry.count + Self.alignment - 1) / Self.alignment * Self.alignment
        return entry
    }

    public subscript(name: String) -> Entry? { index[name].map { entries[$0] } }

    /// Elements of trainable tensors (what the reference reports as "trainable parameters").
    public var trainableCount: Int { entries.filter(\.trainable).reduce(0) { $0 + $1.count } }
}
