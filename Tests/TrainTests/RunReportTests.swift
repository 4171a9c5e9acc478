import Datasets
import Foundation
import Tensors
import Testing
import TestSupport
@testable import Train

enum ReportFixture {
    /// A metrics.jsonl of `iterations` pre-training iterations (two epochs) with a spike at
    /// iteration 777, two kNN evaluations, and optionally a last line cut off mid-write.
    static func runFolder(_ name: String, iterations: Int = 20_000, truncated: Bool = false) throws -> URL {
        let folder = try TinyRun.folder(name)
        var lines = ["{\"type\":\"evaluation\",\"epoch\":0,\"knn_top1\":0.6851,\"seconds\":1}"]
        for step in 1...iterations {
            let spike = step == 777
            let norm = spike ? 250.0 : 1 + 0.1 * sin(Double(step))
            lines.append("{\"type\":\"iteration\",\"epoch\":\(step <= iterations / 2 ? 0 : 1),\"batch\":\(step % (iterations / 2)),"
                + "\"step\":\(step),\"loss\":\(4 - 2 * Double(step) / Double(iterations)),\"lr\":0.001,\"m\":0.99,"
                + "\"images_per_second\":200,\"data_seconds\":0.001,\"knn_monitor\":0.5,"
                + "\"grad_norm\":{\"patch_embed\":\(norm),\"blocks.0\":0.5,\"blocks.1\":0.4,\"head\":2}"
                + (spike ? ",\"spikes\":[\"patch_embed\"]" : "") + "}")
            if step == iterations / 2 { lines.append("{\"type\":\"evaluation\",\"epoch\":1,\"knn_top1\":0.7635,\"seconds\":1}") }
        }
        var text = lines.joined(separator: "\n") + "\n"
        if truncated { text += "{\"type\":\"iteration\",\"epoch\":1,\"ba" }
        try Data(text.utf8).write(to: folder.appendingPathComponent("metrics.jsonl"))
        try Data("{\"lr\":0.0015,\"batchSize\":256}".utf8).write(to: folder.appendingPathComponent("config.json"))
        return folder
    }

    /// The `data-points` of the series named `name` in `html`.
    static func points(of name: String, in html: String) -> Int? {
        guard let range = html.range(of: "data-name=\"\(name)\" data-points=\"") else { return nil }
        return Int(html[range.upperBound...].prefix { $0.isNumber })
    }
}

@Suite struct RunReportTests {
    @Test func everySeriesIsDrawnDecimatedWithSpikesAndBaselines() throws {
        let folder = try ReportFixture.runFolder("report")
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try RunReport.load(folder)
        #expect(run.iterationCount == 20_000 && run.evaluations.count == 2 && run.warnings.isEmpty)
        let html = RunReport.html([run], title: "t")
        for name in ["loss", "loss, smoothed", "lr", "1 − m (scaled to the lr&apos;s peak)".replacingOccurrences(of: "&apos;", with: "'"),
                     "img/s", "dense kNN monitor (batch)", "kNN evaluation (held-out split)", "initialisation baseline 68.51%",
                     "patch_embed (first layer)", "blocks.1 (last block)", "blocks.0", "head"] {
            let escaped = RunReport.escape(name)
            let count = ReportFixture.points(of: escaped, in: html)
            #expect(count != nil, "series \(name) missing")
            // Decimated: at most two points per pixel column of the 1110-px plot.
            #expect((count ?? 0) <= 2 * 1110, "\(name): \(count ?? -1) points")
        }
        #expect(ReportFixture.points(of: "kNN evaluation (held-out split)", in: html) == 2)
        #expect(ReportFixture.points(of: "initialisation baseline 68.51%", in: html) == 2)
        // The spike survives decimation (the column's maximum) and is marked.
        #expect(html.contains("class=\"spike\"") && html.contains("spike in patch_embed at iteration 777"))
        #expect(html.contains("1 iterations with gradient spikes"))
        // Self-contained: no script, no external resource.
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href=") && !html.contains("<link"))
        #expect(html.count < 2_000_000)
        try RunReport.write([run], title: "t", to: folder.appendingPathComponent("report.html"))
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("report.html").path))
    }

    /// The report reads a series of any length into a fixed buffer and keeps its extremes.
    @Test func aReducedSeriesStaysBoundedAndKeepsItsExtremes() {
        var series = RunReport.ReducedSeries()
        for i in 0..<1_000_000 { series.add(Double(i), i == 654_321 ? 50 : i == 3 ? -7 : sin(Double(i) / 1000)) }
        series.add(1_000_000, .nan)
        let kept = series.all
        #expect(series.count == 1_000_001)
        #expect(kept.count <= 2 * RunReport.ReducedSeries.capacity && kept.count >= RunReport.ReducedSeries.capacity)
        #expect(kept.contains { $0 == (654_321, 50) } && kept.contains { $0 == (3, -7) })
        #expect(zip(kept, kept.dropFirst()).allSatisfy { $0.0 < $1.0 })
        #expect(abs((kept.map(\.1).filter { $0 < 2 }.max() ?? 0) - 1) < 1e-6)
        var short = RunReport.ReducedSeries()
        for i in 0..<10 { short.add(Double(i), Double(i * i)) }
        #expect(short.all.map(\.1) == (0..<10).map { Double($0 * $0) })
    }

    @Test func decimationKeepsEachColumnsMinimumAndMaximum() {
        var points = (0..<10_000).map { (Double($0), 1.0) }
        points[5_000].1 = 9
        points[7_000].1 = -3
        let kept = Chart.decimated(points, columns: 100, xMin: 0, xMax: 9_999)
        #expect(kept.count <= 200 && kept.contains { $0.1 == 9 } && kept.contains { $0.1 == -3 })
        #expect(zip(kept, kept.dropFirst()).allSatisfy { $0.0 <= $1.0 })
        #expect(Chart.decimated([(0, 1), (1, 2)], columns: 100, xMin: 0, xMax: 1).count == 2)
        #expect(Chart.ticks(0, 700, count: 8) == [0, 100, 200, 300, 400, 500, 600, 700])
    }

    @Test func oddNamesAreEscapedAndTruncatedLinesReported() throws {
        let folder = try ReportFixture.runFolder("report-cut", iterations: 200, truncated: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try RunReport.load(folder, name: "lr<1e-3> & \"b=4096\"")
        #expect(run.iterationCount == 200)
        #expect(run.warnings.count == 1 && run.warnings[0].contains("line 203 is incomplete"))
        let html = RunReport.html([run, run], title: "a <b> & c")
        #expect(html.contains("lr&lt;1e-3&gt; &amp; &quot;b=4096&quot;") && !html.contains("lr<1e-3>"))
        #expect(html.contains("<title>a &lt;b&gt; &amp; c</title>"))
        #expect(html.contains("line 203 is incomplete"))
        // Two runs overlaid: each series once per run, prefixed with the run's name.
        #expect(html.components(separatedBy: "data-name=\"lr&lt;1e-3&gt; &amp; &quot;b=4096&quot;: loss\"").count == 3)
        let empty = try TinyRun.folder("report-empty")
        defer { try? FileManager.default.removeItem(at: empty) }
        expectError(["holds no readable metrics.jsonl", empty.path]) { _ = try RunReport.load(empty) }
    }

    /// A pretrain run writes its report.html at every epoch end.
    @Test func aRunWritesItsReport() throws {
        let folder = try TinyRun.folder("report-run")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.epochs = 1
        configuration.warmupEpochs = 0.5
        _ = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(), runFolder: folder,
                           workers: 2) { _ in }.run()
        let html = try String(contentsOf: folder.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(ReportFixture.points(of: "loss", in: html) == 4 && html.contains("kNN evaluation (held-out split)"))
        #expect(html.contains("mocov3-cl pretrain · device host · wall time 0 min"))
    }
}

/// The report of a long run rendered by a real browser (Debian's headless Chromium, installed by
/// `.ci/run`): the PNG has the window's size and is not blank.
@Suite(.enabled(if: Browser.path != nil, "no chromium found (apt-get install chromium); the browser test is skipped"))
struct ReportInBrowserTests {
    @Test func chromiumRendersTheReport() throws {
        let folder = try ReportFixture.runFolder("report-browser")
        defer { try? FileManager.default.removeItem(at: folder) }
        let page = folder.appendingPathComponent("report.html"), png = folder.appendingPathComponent("report.png")
        try RunReport.write([RunReport.load(folder)], title: "browser test", to: page)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Browser.path!)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600",
                             "--screenshot=\(png.path)", page.absoluteString]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let image = try ImageDecoder.decode(contentsOf: png.path)
        #expect(image.width == 1280 && image.height == 1600)
        // Not blank: a few percent of the pixels are ink, in several colours (the series).
        let channels = image.channels
        var ink = 0, colours = Set<Int>()
        for index in stride(from: 0, to: image.pixels.count, by: channels) {
            let pixel = image.pixels[index..<(index + channels)]
            if pixel.contains(where: { $0 < 200 }) {
                ink += 1
                colours.insert(pixel.reduce(0) { $0 << 8 | Int($1) } >> 4)
            }
        }
        let fraction = Double(ink) / Double(image.width * image.height)
        #expect(fraction > 0.01 && fraction < 0.6, "ink fraction \(fraction)")
        #expect(colours.count > 20)
    }
}

enum Browser {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
}
