import Testing
@testable import Datasets

/// Decoding of the files the image folders hold; sizes are odd so no row padding can hide.
@Suite struct ImageDecodingTests {
    static let width = 13, height = 9

    @Test func greyPNGIsExactAndOneChannel() throws {
        var random = TestBytes(seed: 1)
        let pixels = random.bytes(Self.width * Self.height)
        let bytes = try TestFiles.png(width: Self.width, height: Self.height, channels: 1, pixels: pixels)
        let image = try ImageDecoder.decode(bytes, path: "grey.png")
        #expect(image == Image(width: Self.width, height: Self.height, channels: 1, pixels: pixels))
    }

    @Test func rgbPNGIsExact() throws {
        var random = TestBytes(seed: 2)
        let pixels = random.bytes(Self.width * Self.height * 3)
        let bytes = try TestFiles.png(width: Self.width, height: Self.height, channels: 3, pixels: pixels)
        #expect(try ImageDecoder.decode(bytes, path: "rgb.png") == Image(width: Self.width, height: Self.height, channels: 3, pixels: pixels))
    }

    /// Opaque pixels keep their colour and transparent ones become black; partial alpha would
    /// be composited in linear light, so it is left out of an exact comparison.
    @Test func rgbaPNGIsCompositedOnBlack() throws {
        var random = TestBytes(seed: 3)
        let count = Self.width * Self.height
        let rgb = random.bytes(count * 3)
        var rgba: [UInt8] = [], expected: [UInt8] = []
        for pixel in 0..<count {
            let opaque = pixel % 3 != 0
            rgba += rgb[3 * pixel ..< 3 * pixel + 3] + [opaque ? 255 : 0]
            expected += opaque ? Array(rgb[3 * pixel ..< 3 * pixel + 3]) : [0, 0, 0]
        }
        let bytes = try TestFiles.png(width: Self.width, height: Self.height, channels: 4, pixels: rgba)
        let image = try ImageDecoder.decode(bytes, path: "rgba.png")
        #expect(image == Image(width: Self.width, height: Self.height, channels: 3, pixels: expected))
    }

    @Test(arguments: [1, 3])
    func sixteenBitPNGReducesToEightBits(channels: Int) throws {
        var random = TestBytes(seed: 4)
        let expected = random.bytes(Self.width * Self.height * channels)
        let samples = expected.map { UInt16($0) * 257 }
        let bytes = TestFiles.png16(width: Self.width, height: Self.height, channels: channels, samples: samples)
        let image = try ImageDecoder.decode(bytes, path: "deep.png")
        #expect(image == Image(width: Self.width, height: Self.height, channels: channels, pixels: expected))
    }

    @Test(arguments: [1, 3])
    func jpegDecodesWithinTolerance(channels: Int) throws {
        let pixels = TestFiles.gradient(width: Self.width, height: Self.height, channels: channels, seed: 5)
        let bytes = try TestFiles.jpeg(width: Self.width, height: Self.height, channels: channels, pixels: pixels)
        let image = try ImageDecoder.decode(bytes, path: "photo.jpg")
        #expect(image.width == Self.width && image.height == Self.height && image.channels == channels)
        let worst = zip(image.pixels, pixels).map { abs(Int($0) - Int($1)) }.max() ?? .max
        #expect(worst <= 3, "worst pixel difference \(worst)")
    }

    /// TurboJPEG writes CMYK as an Adobe YCCK JPEG with inverted ink values (ImageNet has a few
    /// such files); they must come out as RGB with R = C·K/255.
    @Test func cmykJPEGBecomesRGB() throws {
        let cmyk = TestFiles.gradient(width: Self.width, height: Self.height, channels: 4, seed: 6)
        let bytes = try TestFiles.jpeg(width: Self.width, height: Self.height, channels: 4, pixels: cmyk)
        let image = try ImageDecoder.decode(bytes, path: "print.jpg")
        #expect(image.channels == 3 && image.width == Self.width)
        var worst = 0
        for pixel in 0..<Self.width * Self.height {
            let k = Int(cmyk[4 * pixel + 3])
            for channel in 0..<3 {
                worst = max(worst, abs(Int(image.pixels[3 * pixel + channel]) - Int(cmyk[4 * pixel + channel]) * k / 255))
            }
        }
        #expect(worst <= 4, "worst pixel difference \(worst)")
    }

    @Test func randomBytesAreRejectedNamingThePath() throws {
        var random = TestBytes(seed: 6)
        var bytes = random.bytes(500)
        bytes[0] = 0x42  // never a JPEG or PNG signature
        expectDatasetError(containing: ["/data/noise.jpg", "not a JPEG or PNG"]) {
            _ = try ImageDecoder.decode(bytes, path: "/data/noise.jpg")
        }
    }

    @Test func truncatedJPEGIsRejected() throws {
        var random = TestBytes(seed: 7)
        let pixels = random.bytes(64 * 64 * 3)
        let whole = try TestFiles.jpeg(width: 64, height: 64, channels: 3, pixels: pixels)
        expectDatasetError(containing: ["/data/cut.jpg", "truncated"]) {
            _ = try ImageDecoder.decode(Array(whole.prefix(whole.count / 2)), path: "/data/cut.jpg")
        }
    }

    @Test func truncatedPNGIsRejected() throws {
        var random = TestBytes(seed: 8)
        let whole = try TestFiles.png(width: 64, height: 64, channels: 3, pixels: random.bytes(64 * 64 * 3))
        expectDatasetError(containing: ["/data/cut.png"]) {
            _ = try ImageDecoder.decode(Array(whole.prefix(whole.count / 2)), path: "/data/cut.png")
        }
    }

    @Test func shapeComesFromTheHeader() throws {
        let png = try TestFiles.png(width: 13, height: 9, channels: 1, pixels: [UInt8](repeating: 9, count: 117))
        let jpeg = try TestFiles.jpeg(width: 13, height: 9, channels: 3,
                                      pixels: TestFiles.gradient(width: 13, height: 9, channels: 3, seed: 1))
        #expect(ImageDecoder.shape(of: png).map { [$0.width, $0.height, $0.channels] } == [13, 9, 1])
        #expect(ImageDecoder.shape(of: jpeg).map { [$0.width, $0.height, $0.channels] } == [13, 9, 3])
    }
}
