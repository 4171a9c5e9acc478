import COpenBLAS

/// The geometry of a patch projection, validated from the tensors' shapes.
public struct PatchGeometry: Equatable, Sendable {
    public let batch: Int, channels: Int, height: Int, width: Int, patchSize: Int
    /// Tokens per image in the output (cls + patches), and where the patches start.
    public let tokens: Int, firstToken: Int
    public let embedDim: Int

    /// Patches per image, `(H/P)·(W/P)`, in row-major order.
    public var patches: Int { (height / patchSize) * (width / patchSize) }
    /// Inputs per patch, `channels·P·P` (the GEMM's K).
    public var patchLength: Int { channels * patchSize * patchSize }

    /// Checks images (B, ch, H, W), output (B, N, C), weight (C, ch·P·P) and bias (C).
    public init(output: Tensor, images: Tensor, weight: Tensor, bias: Tensor, patchSize: Int, firstToken: Int,
                operation: String) throws {
        func fail(_ reason: String) -> BackendError { .invalidArgument(operation: operation, reason: reason) }
        guard images.shape.count == 4 else { throw fail("images must be (B, channels, H, W), got \(images.shape)") }
        guard output.shape.count == 3 else { throw fail("tokens must be (B, N, C), got \(output.shape)") }
        batch = images.shape[0]
        channels = images.shape[1]
        height = images.shape[2]
        width = images.shape[3]
        self.patchSize = patchSize
        tokens = output.shape[1]
        embedDim = output.shape[2]
        self.firstToken = firstToken
        guard patchSize > 0, height % patchSize == 0, width % patchSize == 0 else {
            throw fail("patch size \(patchSize) does not divide the \(height)×\(width) images")
        }
        guard output.shape[0] == batch else { throw fail("tokens have batch \(output.shape[0]), images \(batch)") }
        guard firstToken >= 0, firstToken + patches <= tokens else {
            throw fail("\(patches) patches from token \(firstToken) do not fit \(tokens) tokens")
        }
        guard weight.count == embedDim * patchLength, bias.count == embedDim else {
            throw fail("weight must have C·channels·P² = \(embedDim * patchLength) elements and bias \(embedDim); "
                       + "got \(weight.count) and \(bias.count)")
        }
    }

    /// Offset in a (B, ch, H, W) image of input `k = ch·P² + i·P + j` of patch `t` of image `b`.
    @inlinable
    public func pixelIndex(image b: Int, patch t: Int, input k: Int) -> Int {
        let columns = width / patchSize
        let (row, column) = (t / columns, t % columns)
        let channel = k / (patchSize * patchSize), within = k % (patchSize * patchSize)
        let (i, j) = (within / patchSize, within % patchSize)
        return ((b * channels + channel) * height + row * patchSize + i) * width + column * patchSize + j
    }
}

/// Reference math for kernels/cl/patch_embed.cl: Conv2d(ch, C, P, stride P) + flatten + transpose.
public enum PatchEmbedReference {
    public static func forward<T: FloatingPoint>(output: UnsafeMutablePointer<T>, images: UnsafePointer<T>,
                                                  weight: UnsafePointer<T>, bias: UnsafePointer<T>,
                                                  geometry g: PatchGeometry) {
        for b in 0..<g.batch {
            for t in 0..<g.patches {
                let row = output + (b * g.tokens + g.firstToken + t) * g.embedDim
                for c in 0..<g.embedDim {
                    var sum = bias[c]
                    for k in 0..<g.patchLength { sum += weight[c * g.patchLength + k] * images[g.pixelIndex(image: b, patch: t, input: k)] }
                    row[c] = sum
                }
            }
        }
    }

    /// Accumulates dW (C, K) and db (C).
    public static func backward<T: FloatingPoint>(weightGradient: UnsafeMutablePointer<T>,
                                                   biasGradient: UnsafeMutablePointer<T>,
                                                   outputGradient: UnsafePointer<T>, images: UnsafePointer<T>,
                                                   geometry g: PatchGeometry) {
        for b in 0..<g.batch {
            for t in 0..<g.patches {
                let row = outputGradient + (b * g.tokens + g.firstToken + t) * g.embedDim
                for c in 0..<g.embedDim {
                    biasGradient[c] += row[c]
                    for k in 0..<g.patchLength {
                        weightGradient[c * g.patchLength + k] += row[c] * images[g.pixelIndex(image: b, patch: t, input: k)]
                    }
                }
            }
        }
    }
}

extension HostBackend {
    /// Patches of every image gathered into rows (B·T, K): the host runs the projection as one
    /// OpenBLAS GEMM per image on this pooled scratch.
    private func gatherPatches(_ images: Tensor, _ g: PatchGeometry) throws -> Tensor {
        let patches = try makeTensor(shape: [g.batch * g.patches, g.patchLength])
        let source = pointer(images), target = pointer(patches)
        for b in 0..<g.batch {
            for t in 0..<g.patches {
                let row = target + (b * g.patches + t) * g.patchLength
                for k in 0..<g.patchLength { row[k] = source[g.pixelIndex(image: b, patch: t, input: k)] }
            }
        }
        return patches
    }

    public func patchEmbedForward(output: Tensor, images: Tensor, weight: Tensor, bias: Tensor, patchSize: Int,
                                  firstToken: Int) throws {
        try checkOperands("patchEmbedForward", output, images, weight, bias)
        let g = try PatchGeometry(output: output, images: images, weight: weight, bias: bias, patchSize: patchSize,
                                  firstToken: firstToken, operation: "patchEmbedForward")
        let patches = try gatherPatches(images, g)
        let out = pointer(output), b = pointer(bias)
        for image in 0..<g.batch {
            let rows = out + (image * g.tokens + g.firstToken) * g.embedDim
            for t in 0..<g.patches { (rows + t * g.embedDim).update(from: b, count: g.embedDim) }
            // tokens (T, C) += patches (T, K) · Wᵀ (K, C)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(g.patches), Int32(g.embedDim),
                        Int32(g.patchLength), 1, pointer(patches) + image * g.patches * g.patchLength,
                        Int32(g.patchLength), pointer(weight), Int32(g.patchLength), 1, rows, Int32(g.embedDim))
        }
    }

    public func patchEmbedBackward(weightGradient: Tensor, biasGradient: Tensor, outputGradient: Tensor,
                                   images: Tensor, patchSize: Int, firstToken: Int) throws {
        try checkOperands("patchEmbedBackward", weightGradient, biasGradient, outputGradient, images)
        let g = try PatchGeometry(output: outputGradient, images: images, weight: weightGradient, bias: biasGradient,
                                  patchSize: patchSize, firstToken: firstToken, operation: "patchEmbedBackward")
        let patches = try gatherPatches(images, g)
        let dy = pointer(outputGradient), db = pointer(biasGradient)
        for image in 0..<g.batch {
            let rows = dy + (image * g.tokens + g.firstToken) * g.embedDim
            // dW (C, K) += dYᵀ (C, T) · patches (T, K)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(g.embedDim), Int32(g.patchLength),
                        Int32(g.patches), 1, rows, Int32(g.embedDim),
                        pointer(patches) + image * g.patches * g.patchLength, Int32(g.patchLength), 1,
                        pointer(weightGradient), Int32(g.patchLength))
            for t in 0..<g.patches {
                let row = rows + t * g.embedDim
                for c in 0..<g.embedDim { db[c] += row[c] }
            }
        }
    }
}
