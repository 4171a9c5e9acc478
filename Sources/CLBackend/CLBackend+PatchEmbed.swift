import Tensors

// Launchers for kernels/cl/patch_embed.cl. Host reference: HostBackend+PatchEmbed.swift.
extension CLBackend {
    /// Register tile of patch_embed.cl: VW-wide vectors, VECS of them per token, TOKENS tokens.
    static let patchVectorWidth = 8
    static let patchVectors = 2
    static let patchTokens = 4

    public func patchEmbedForward(output: Tensor, images: Tensor, weight: Tensor, bias: Tensor, patchSize: Int,
                                  firstToken: Int) throws {
        try checkOperands("patchEmbedForward", output, images, weight, bias)
        let g = try PatchGeometry(output: output, images: images, weight: weight, bias: bias, patchSize: patchSize,
                                  firstToken: firstToken, operation: "patchEmbedForward")
        for count in [output.count, images.count] { _ = try int32Count(count, "patchEmbedForward") }
        let width = Self.patchVectorWidth, tile = width * Self.patchVectors
        let padded = (g.embedDim + tile - 1) / tile * tile
        let options = "-DVW=\(width) -DVECS=\(Self.patchVectors) -DTOKENS=\(Self.patchTokens)"
        let packed = try makeTensor(shape: [g.patchLength, padded])
        try launch(kernel("patch_pack_weight", family: "patch_embed", options: options), label: "patch_pack_weight",
                   global: [padded, g.patchLength],
                   [.buffer(packed)] + [.operand(weight), .int(Int32(g.embedDim)), .int(Int32(padded)),
                    .int(Int32(g.patchLength))])
        try launch(kernel("patch_embed_forward", family: "patch_embed", options: options), label: "patch_embed_forward",
                   global: [padded / tile, (g.batch * g.patches + Self.patchTokens - 1) / Self.patchTokens],
                   [.operand(output), .operand(images), .buffer(packed)] + [.operand(bias)]
                   + geometryArguments(g) + [.int(Int32(padded))])
    }

    public func patchEmbedBackward(weightGradient: Tensor, biasGradient: Tensor, outputGradient: Tensor,
                                   images: Tensor, patchSize: Int, firstToken: Int) throws {
        try checkOperands("patchEmbedBackward", weightGradient, biasGradient, outputGradient, images)
        let g = try PatchGeometry(output: outputGradient, images: images, weight: weightGradient, bias: biasGradient,
                                  patchSize: patchSize, firstToken: firstToken, operation: "patchEmbedBackward")
        for count in [outputGradient.count, images.count] { _ = try int32Count(count, "patchEmbedBackward") }
        let width = Self.patchVectorWidth
        try launch(kernel("patch_embed_backward", family: "patch_embed",
                          options: "-DVW=\(width) -DVECS=\(Self.patchVectors) -DTOKENS=\(Self.patchTokens)"),
                   label: "patch_embed_backward",
                   global: [(g.embedDim + width - 1) / width, g.patchLength + 1],
                   [.operand(weightGradient), .operand(biasGradient), .operand(outputGradient), .operand(images)]
                   + geometryArguments(g))
    }

    private func geometryArguments(_ g: PatchGeometry) -> [KernelArgument] {
        [.int(Int32(g.batch)), .int(Int32(g.channels)), .int(Int32(g.height)), .int(Int32(g.width)),
         .int(Int32(g.patchSize)), .int(Int32(g.tokens)), .int(Int32(g.firstToken)), .int(Int32(g.embedDim))]
    }
}
