import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/patch_embed.cl against the host backend (OpenBLAS on gathered patches).
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct PatchEmbedTests {
    struct Geometry: Sendable, CustomTestStringConvertible {
        let batch: Int, channels: Int, size: (height: Int, width: Int), patch: Int, embed: Int, firstToken: Int
        var patches: Int { (size.height / patch) * (size.width / patch) }
        var tokens: Int { firstToken + patches }
        var testDescription: String {
            "B=\(batch) \(channels)×\(size.height)×\(size.width) P=\(patch) C=\(embed) first=\(firstToken)"
        }
    }

    static let geometries = [
        Geometry(batch: 4, channels: 3, size: (32, 32), patch: 4, embed: 192, firstToken: 1),   // ViT-Tiny/4 CIFAR
        Geometry(batch: 2, channels: 3, size: (28, 28), patch: 4, embed: 64, firstToken: 1),    // Fashion-MNIST
        Geometry(batch: 1, channels: 3, size: (224, 224), patch: 16, embed: 384, firstToken: 1), // ViT-S/16
        Geometry(batch: 3, channels: 1, size: (12, 8), patch: 4, embed: 13, firstToken: 0),     // odd C, no cls
        Geometry(batch: 2, channels: 2, size: (6, 9), patch: 3, embed: 7, firstToken: 2),
    ]
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    @Test(arguments: geometries)
    func forwardAndBackwardMatchHost(_ g: Geometry) throws {
        var generator = SplitMix64(seed: UInt64(g.embed))
        let imageShape = [g.batch, g.channels, g.size.height, g.size.width]
        let inputs = g.channels * g.patch * g.patch
        let images = randomValues(imageShape.reduce(1, *), in: -2...2, using: &generator)
        let weight = randomValues(g.embed * inputs, using: &generator)
        let bias = randomValues(g.embed, using: &generator)
        let tokenShape = [g.batch, g.tokens, g.embed]
        // Token rows before firstToken (the cls row) must stay untouched: they start as a canary.
        var tokensStart = [Float](repeating: .nan, count: tokenShape.reduce(1, *))
        for b in 0..<g.batch { for r in 0..<g.firstToken { for c in 0..<g.embed { tokensStart[(b * g.tokens + r) * g.embed + c] = 42 } } }
        let produced = try compareWithHost(device, inputs: [.float(images, shape: imageShape), .float(weight, shape: [g.embed, inputs]),
                                                            .float(bias, shape: [g.embed])],
                                           outputs: [OpOutput(shape: tokenShape, initial: tokensStart)],
                                           absolute: 2e-7 * Double(inputs) + 1e-5, "patchEmbedForward \(g)") { b, i, o in
            try b.patchEmbedForward(output: o[0], images: i[0], weight: i[1], bias: i[2], patchSize: g.patch,
                                    firstToken: g.firstToken)
        }
        #expect((0..<g.batch).allSatisfy { b in (0..<g.firstToken * g.embed).allSatisfy { produced[0][b * g.tokens * g.embed + $0] == 42 } })

        let outputGradient = randomValues(tokenShape.reduce(1, *), using: &generator)
        let weightStart = randomValues(g.embed * inputs, using: &generator)
        let biasStart = randomValues(g.embed, using: &generator)
        try compareWithHost(device, inputs: [.float(outputGradient, shape: tokenShape), .float(images, shape: imageShape)],
                            outputs: [OpOutput(shape: [g.embed, inputs], initial: weightStart),
                                      OpOutput(shape: [g.embed], initial: biasStart)],
                            absolute: 4e-7 * Double(g.batch * g.patches) + 1e-5, "patchEmbedBackward \(g)") { b, i, o in
            try b.patchEmbedBackward(weightGradient: o[0], biasGradient: o[1], outputGradient: i[0], images: i[1],
                                     patchSize: g.patch, firstToken: g.firstToken)
        }
    }

    @Test func geometryErrorsSayWhatIsWrong() throws {
        let host = HostBackend()
        let error = #expect(throws: BackendError.self) {
            try host.patchEmbedForward(output: host.makeTensor(shape: [1, 5, 8]), images: host.makeTensor(shape: [1, 3, 10, 10]),
                                       weight: host.makeTensor(shape: [8, 48]), bias: host.makeTensor(shape: [8]),
                                       patchSize: 4, firstToken: 1)
        }
        #expect("\(error!)".contains("does not divide"))
    }
}
