import CPNG
import CTurboJPEG
import Foundation

/// JPEG (TurboJPEG) and PNG (libpng's simplified API) decoding to 8-bit ``Image``s: grey files
/// stay 1-channel, everything else becomes RGB. The format is taken from the file's signature,
/// not its extension, so a misnamed file still decodes and random bytes fail cleanly.
public enum ImageDecoder {
    /// Reads and decodes the file at `path`; errors name the path and the reason.
    public static func decode(contentsOf path: String) throws -> Image {
        try decode(try readFile(path), path: path)
    }

    /// Decodes JPEG or PNG bytes; `path` is used only in error messages.
    public static func decode(_ bytes: [UInt8], path: String) throws -> Image {
        switch format(of: bytes) {
        case .jpeg: return try decodeJPEG(bytes, path: path)
        case .png: return try decodePNG(bytes, path: path)
        case nil:
            let start = bytes.prefix(8).map { String($0, radix: 16) }.joined(separator: " ")
            throw DatasetError("cannot decode \(path): not a JPEG or PNG file (first bytes: \(start.isEmpty ? "none, the file is empty" : start))")
        }
    }

    /// Width, height and channels without decoding the pixels, or nil when the header is unreadable.
    static func shape(of bytes: [UInt8]) -> (width: Int, height: Int, channels: Int)? {
        switch format(of: bytes) {
        case .jpeg: return try? jpegHeader(bytes, path: "")
        case .png: return pngHeader(bytes)
        case nil: return nil
        }
    }

    /// The largest decoded image accepted, in bytes (1 GiB: 16384² RGB plus a margin). A header
    /// declaring more (a 60000 × 60000 "image" of a few bytes) is rejected before allocation.
    public static let maximumDecodedBytes = 1 << 30

    /// Throws unless a `width`×`height`×`channels` image is plausible for a file of `fileBytes`:
    /// within ``maximumDecodedBytes``, and for PNG within deflate's largest expansion (1032:1).
    static func checkDeclaredSize(width: Int, height: Int, channels: Int, fileBytes: Int, format: Format,
                                  path: String) throws {
        let pixels = width.multipliedReportingOverflow(by: height)
        let bytes = pixels.partialValue.multipliedReportingOverflow(by: channels)
        let name = format == .png ? "PNG" : "JPEG"
        guard !pixels.overflow, !bytes.overflow, bytes.partialValue <= maximumDecodedBytes else {
            throw DatasetError("cannot decode \(path): its \(name) header declares \(width)x\(height) pixels, more than the "
                + "\(maximumDecodedBytes >> 20) MiB this reader decodes; the file is corrupt or not a training image")
        }
        if format == .png, bytes.partialValue / 1032 > fileBytes + (1 << 16) {
            throw DatasetError("cannot decode \(path): its PNG header declares \(width)x\(height) pixels, more than its "
                + "\(fileBytes) bytes can hold; the file is corrupt")
        }
    }

    enum Format { case jpeg, png }

    static func format(of bytes: [UInt8]) -> Format? {
        if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        return nil
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError("cannot read \(path): the file is missing or unreadable")
        }
        return [UInt8](data)
    }

    // MARK: JPEG

    /// Width, height and colorspace (`TJCS_*`) from a JPEG header.
    private static func readJPEGHeader(_ bytes: [UInt8], handle: tjhandle, path: String) throws -> (width: Int32, height: Int32, colorspace: Int32) {
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(handle, bytes, UInt(bytes.count), &width, &height, &subsampling, &colorspace) == 0,
              width > 0, height > 0 else {
            throw DatasetError("cannot decode \(path): bad JPEG header (\(String(cString: tjGetErrorStr2(handle))))")
        }
        return (width, height, colorspace)
    }

    private static func jpegHeader(_ bytes: [UInt8], path: String) throws -> (width: Int, height: Int, channels: Int) {
        guard let handle = tjInitDecompress() else {
            throw DatasetError("cannot decode \(path): TurboJPEG could not create a decompressor")
        }
        defer { tjDestroy(handle) }
        let header = try readJPEGHeader(bytes, handle: handle, path: path)
        return (Int(header.width), Int(header.height), header.colorspace == Int32(TJCS_GRAY.rawValue) ? 1 : 3)
    }

    private static func decodeJPEG(_ bytes: [UInt8], path: String) throws -> Image {
        guard let handle = tjInitDecompress() else {
            throw DatasetError("cannot decode \(path): TurboJPEG could not create a decompressor")
        }
        defer { tjDestroy(handle) }
        let (width, height, colorspace) = try readJPEGHeader(bytes, handle: handle, path: path)
        let isGrey = colorspace == Int32(TJCS_GRAY.rawValue)
        // libjpeg cannot convert CMYK/YCCK to RGB, so those are decoded as CMYK and converted here.
        let isCMYK = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let pixelFormat = isGrey ? TJPF_GRAY : isCMYK ? TJPF_CMYK : TJPF_RGB
        let outputChannels = isGrey ? 1 : isCMYK ? 4 : 3
        try checkDeclaredSize(width: Int(width), height: Int(height), channels: outputChannels, fileBytes: bytes.count,
                              format: .jpeg, path: path)
        var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * outputChannels)
        let status = tjDecompress2(handle, bytes, UInt(bytes.count), &pixels, width, 0, height,
                                   Int32(pixelFormat.rawValue), 0)
        if status != 0 {
            // Most warnings (for example "Corrupt JPEG data: N extraneous bytes before marker")
            // still yield the whole image, and PIL, which torchvision uses, accepts those files.
            // A premature end leaves the rest of the image grey, which PIL rejects as truncated.
            let message = String(cString: tjGetErrorStr2(handle))
            if tjGetErrorCode(handle) != Int32(TJERR_WARNING.rawValue) || message.contains("Premature end") {
                throw DatasetError("cannot decode \(path): \(message) (the JPEG file is corrupt or truncated)")
            }
        }
        if isCMYK { pixels = rgb(fromInvertedCMYK: pixels) }
        return Image(width: Int(width), height: Int(height), channels: isGrey ? 1 : 3, pixels: pixels)
    }

    /// CMYK JPEGs are written by Adobe software with inverted channels (255 = no ink), so
    /// R = C·K/255 and likewise for G and B; the same rule PIL applies.
    private static func rgb(fromInvertedCMYK cmyk: [UInt8]) -> [UInt8] {
        let count = cmyk.count / 4
        var rgb = [UInt8](repeating: 0, count: count * 3)
        for pixel in 0..<count {
            let k = UInt32(cmyk[4 * pixel + 3])
            for channel in 0..<3 {
                rgb[3 * pixel + channel] = UInt8((UInt32(cmyk[4 * pixel + channel]) * k + 127) / 255)
            }
        }
        return rgb
    }

    // MARK: PNG

    private static func pngMessage(_ image: png_image) -> String {
        withUnsafeBytes(of: image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// libpng keeps a pointer to the `png_image` between begin and finish (it is the error
    /// handler's context), so the struct lives at one heap address for the whole decode.
    private static func withPNGImage<T>(_ bytes: [UInt8], path: String,
                                        _ body: (UnsafeMutablePointer<png_image>) throws -> T) throws -> T {
        let image = UnsafeMutablePointer<png_image>.allocate(capacity: 1)
        image.initialize(to: png_image())
        image.pointee.version = UInt32(PNG_IMAGE_VERSION)
        defer {
            png_image_free(image)
            image.deallocate()
        }
        guard png_image_begin_read_from_memory(image, bytes, bytes.count) != 0 else {
            throw DatasetError("cannot decode \(path): bad PNG header (\(pngMessage(image.pointee)))")
        }
        return try body(image)
    }

    private static func pngShape(_ image: png_image) -> (width: Int, height: Int, channels: Int) {
        let isColor = image.format & UInt32(PNG_FORMAT_FLAG_COLOR) != 0
        return (Int(image.width), Int(image.height), isColor ? 3 : 1)
    }

    static func pngHeader(_ bytes: [UInt8]) -> (width: Int, height: Int, channels: Int)? {
        try? withPNGImage(bytes, path: "") { pngShape($0.pointee) }
    }

    private static func decodePNG(_ bytes: [UInt8], path: String) throws -> Image {
        try withPNGImage(bytes, path: path) { image in
            let shape = pngShape(image.pointee)
            // 8-bit output without alpha: grey or RGB. Alpha is composited onto black; 16-bit
            // files without gAMA/sRGB chunks are taken as sRGB so they reduce to 8 bits by plain
            // scaling (value/257) instead of being gamma-encoded as if linear.
            image.pointee.format = shape.channels == 1 ? 0 : UInt32(PNG_FORMAT_FLAG_COLOR)  // PNG_FORMAT_GRAY : PNG_FORMAT_RGB
            image.pointee.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
            try checkDeclaredSize(width: shape.width, height: shape.height, channels: shape.channels,
                                  fileBytes: bytes.count, format: .png, path: path)
            var pixels = [UInt8](repeating: 0, count: shape.width * shape.height * shape.channels)
            var black = png_color(red: 0, green: 0, blue: 0)
            guard png_image_finish_read(image, &black, &pixels, 0, nil) != 0 else {
                let message = pngMessage(image.pointee)
                throw DatasetError("cannot decode \(path): \(message.isEmpty ? "PNG data is corrupt" : message)")
            }
            return Image(width: shape.width, height: shape.height, channels: shape.channels, pixels: pixels)
        }
    }
}
