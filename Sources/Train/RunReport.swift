import FileSystem
import Foundation

/// `report.html`: a run folder's `metrics.jsonl` as one self-contained HTML page of inline SVG
/// charts (no script, no network): the loss (raw and smoothed), lr and m, the dense kNN monitor
/// with the per-epoch kNN evaluations and the initialisation baseline, per-layer gradient norms
/// on a log axis with the first layer and the last block highlighted and every flagged spike
/// marked (the paper's Fig. 4), img/s and data wait, and top-1/top-5 for `lincls`/`finetune`.
/// Several runs overlay in one page. Long series are decimated to the chart's width, keeping each
/// column's minimum and maximum, so spikes survive.
public enum RunReport {
    /// A series read point by point into a bounded buffer: consecutive points fall into buckets of
    /// `stride` points, of which only the minimum and the maximum are kept (so a spike or a dip
    /// survives); when the buffer holds ``capacity`` buckets, neighbours merge and the stride
    /// doubles. Memory stays fixed however long the run, and the chart's own per-column decimation
    /// then sees the same extremes it would have found in every point.
    public struct ReducedSeries {
        public static let capacity = 4096
        /// Kept points in x order (at most two per bucket).
        public private(set) var points: [(Double, Double)] = []
        private var bucketStarts: [Int] = []
        private var stride = 1
        private var pending: (low: (Double, Double), high: (Double, Double))?
        private var pendingCount = 0
        /// Every point added, finite or not.
        public private(set) var count = 0

        public init() {}

        public mutating func add(_ x: Double, _ y: Double) {
            count += 1
            guard y.isFinite else { return }
            if let (low, high) = pending {
                pending = (y < low.1 ? (x, y) : low, y > high.1 ? (x, y) : high)
            } else {
                pending = ((x, y), (x, y))
            }
            pendingCount += 1
            if pendingCount >= stride { flush() }
        }

        /// The kept points, the bucket still being filled included.
        public var all: [(Double, Double)] {
            var copy = self
            copy.flush()
            return copy.points
        }

        private mutating func flush() {
            guard let (low, high) = pending else { return }
            bucketStarts.append(points.count)
            points += Self.ordered(low, high)
            pending = nil
            pendingCount = 0
            if bucketStarts.count >= Self.capacity { mergePairs() }
        }

        private static func ordered(_ low: (Double, Double), _ high: (Double, Double)) -> [(Double, Double)] {
            if low.0 == high.0 { return [low] }
            return low.0 < high.0 ? [low, high] : [high, low]
        }

        private mutating func mergePairs() {
            var merged: [(Double, Double)] = [], starts: [Int] = []
            let ends = Array(bucketStarts.dropFirst()) + [points.count]
            for pair in Swift.stride(from: 0, to: bucketStarts.count, by: 2) {
                let last = min(pair + 1, bucketStarts.count - 1)
                let slice = points[bucketStarts[pair]..<ends[last]]
                guard let low = slice.min(by: { $0.1 < $1.1 }), let high = slice.max(by: { $0.1 < $1.1 }) else { continue }
                starts.append(merged.count)
                merged += Self.ordered(low, high)
            }
            (points, bucketStarts) = (merged, starts)
            stride *= 2
        }
    }

    /// One run folder's metrics, read line by line into bounded series.
    public struct Run {
        public var name: String
        /// The number of iteration lines read.
        public var iterationCount = 0
        /// Iteration-line fields by key (`loss`, `lr`, `m`, `images_per_second`, `data_seconds`,
        /// `knn_monitor`, and the smoothed `loss` and `knn_monitor` as `loss.smoothed`, `knn_monitor.smoothed`).
        public var series: [String: ReducedSeries] = [:]
        /// The gradient monitor's layers, in the order of the first iteration line that names them, and their norms.
        public var layers: [String] = []
        public var gradientNorms: [String: ReducedSeries] = [:]
        /// Every flagged spike: iteration, layer, norm.
        public var spikes: [(step: Double, layer: String, norm: Double)] = []
        public var lastStep = 0.0
        public var lastLoss = Double.nan
        public var epochsSeen: Set<Double> = []
        public var evaluations: [[String: Any]] = []
        public var epochs: [[String: Any]] = []
        public var configuration: [String: Any] = [:]
        /// `run.json`: what the run says of itself (device, command, wall time so far).
        public var info: [String: String] = [:]
        /// Problems met while reading (a truncated last line), for the page and the caller.
        public var warnings: [String] = []
        private var averages: [String: Double] = [:]

        public init(name: String) { self.name = name }

        static let fields = ["loss", "lr", "m", "images_per_second", "data_seconds", "knn_monitor"]
        /// The noisy fields that also get an exponential moving average (α 0.02).
        static let smoothedFields: Set = ["loss", "knn_monitor"]

        /// Adds one iteration line's numbers to the series.
        mutating func addIteration(_ object: [String: Any]) {
            let step = number(object["step"]) ?? 0
            iterationCount += 1
            lastStep = step
            epochsSeen.insert(number(object["epoch"]) ?? 0)
            for key in Self.fields {
                guard let value = number(object[key]) else { continue }
                series[key, default: ReducedSeries()].add(step, value)
                if key == "loss" { lastLoss = value }
                if Self.smoothedFields.contains(key), value.isFinite {
                    let average = averages[key].map { $0 + 0.02 * (value - $0) } ?? value
                    averages[key] = average
                    series[key + ".smoothed", default: ReducedSeries()].add(step, average)
                }
            }
            if let norms = object["grad_norm"] as? [String: Any] {
                if layers.isEmpty { layers = orderedLayers(norms) }
                for name in norms.keys.sorted() where !layers.contains(name) { layers.append(name) }
                for (name, value) in norms {
                    if let value = number(value) { gradientNorms[name, default: ReducedSeries()].add(step, value) }
                }
                for layer in object["spikes"] as? [String] ?? [] {
                    if let value = number(norms[layer]) { spikes.append((step, layer, value)) }
                }
            }
        }

        /// The kept points of one field (empty when no line had it).
        public func points(_ key: String) -> [(Double, Double)] { series[key]?.all ?? [] }
    }

    /// Reads `folder/metrics.jsonl` (and `config.json` when present) line by line. Complete lines
    /// are kept; a line that does not parse (a run killed mid-write) is reported in `warnings`.
    public static func load(_ folder: URL, name: String? = nil) throws -> Run {
        let url = folder.appendingPathComponent("metrics.jsonl")
        var run = Run(name: name ?? folder.lastPathComponent)
        let opened = try MetricsLines.forEach(in: url) { number, object in
            guard let object else {
                run.warnings.append("metrics.jsonl line \(number) is incomplete or not JSON (a run stopped mid-write?); it is left out")
                return
            }
            switch object["type"] as? String {
            case "iteration": run.addIteration(object)
            case "evaluation": run.evaluations.append(object)
            case "epoch": run.epochs.append(object)
            case "rollback": break
            default: run.warnings.append("metrics.jsonl line \(number) has no known type; it is left out")
            }
        }
        guard opened else {
            throw PretrainError("\(folder.path) holds no readable metrics.jsonl; is it a pretrain, lincls or finetune run folder?")
        }
        if let data = FileManager.default.contents(atPath: folder.appendingPathComponent("run.json").path),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            run.info = object.mapValues { describe($0) }
        }
        if let config = FileManager.default.contents(atPath: folder.appendingPathComponent("config.json").path),
           let object = try? JSONSerialization.jsonObject(with: config) as? [String: Any] {
            run.configuration = object
        }
        return run
    }

    /// The run's own report: `run.json` (device, command, wall time) and `report.html` in `folder`.
    public static func update(folder: URL, command: String, device: String, seconds: Double) throws {
        let info = ["command": command, "device": device, "wall_seconds": String(format: "%.1f", seconds),
                    "updated": ISO8601DateFormatter().string(from: Date())]
        try FileSystem.writeAtomically(try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys]),
                                       to: folder.appendingPathComponent("run.json"))
        try write([load(folder)], title: "mocov3-cl \(command): \(folder.lastPathComponent)",
                  to: folder.appendingPathComponent("report.html"))
    }

    /// Writes the page of `runs` to `url` atomically.
    public static func write(_ runs: [Run], title: String, to url: URL) throws {
        try FileSystem.writeAtomically(Data(html(runs, title: title).utf8), to: url)
    }

    // MARK: Page

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
    /// The thin, non-highlighted layers of the gradient chart: neither of the highlight colours.
    static let layerPalette = ["#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"]

    public static func html(_ runs: [Run], title: String) -> String {
        var panels: [String] = []
        let multi = runs.count > 1
        func color(_ run: Int, _ series: Int = 0) -> String { palette[(multi ? run : series) % palette.count] }
        func label(_ run: Run, _ what: String) -> String { multi ? "\(run.name): \(what)" : what }

        var loss: [Chart.Series] = [], rates: [Chart.Series] = [], speed: [Chart.Series] = []
        var knn: [Chart.Series] = [], accuracy: [Chart.Series] = []
        var gradients: [Chart.Series] = []
        var spikes: [Chart.Marker] = []
        for (r, run) in runs.enumerated() {
            let raw = run.points("loss")
            loss.append(.init(name: label(run, "loss"), color: color(r, 0), points: raw, opacity: 0.35))
            loss.append(.init(name: label(run, "loss, smoothed"), color: color(r, 0), points: run.points("loss.smoothed"), width: 2))
            rates.append(.init(name: label(run, "lr"), color: color(r, 0), points: run.points("lr"), width: 2))
            let momentum = run.points("m")
            if !momentum.isEmpty { rates.append(.init(name: label(run, "1 − m (scaled to the lr's peak)"), color: color(r, 1),
                                                      points: rescaled(momentum.map { ($0.0, 1 - $0.1) }, to: run.points("lr")),
                                                      dashed: true)) }
            speed.append(.init(name: label(run, "img/s"), color: color(r, 0), points: run.points("images_per_second")))
            let wait = run.points("data_seconds")
            if !wait.isEmpty { speed.append(.init(name: label(run, "data-loader wait (scaled to the img/s peak)"), color: color(r, 1),
                                                  points: rescaled(wait, to: run.points("images_per_second")), dashed: true)) }
            if !run.points("knn_monitor").isEmpty {
                knn.append(.init(name: label(run, "dense kNN monitor (batch)"), color: color(r, 0),
                                 points: run.points("knn_monitor.smoothed"), opacity: 0.8))
            }
            let perEpoch = run.iterationCount == 0 ? 1 : Double(run.iterationCount) / Double(max(run.epochsSeen.count, 1))
            let evaluations = run.evaluations.compactMap { e -> (Double, Double)? in
                guard let epoch = number(e["epoch"]), let top1 = number(e["knn_top1"]) else { return nil }
                return (epoch * perEpoch, top1)
            }
            if !evaluations.isEmpty {
                knn.append(.init(name: label(run, "kNN evaluation (held-out split)"), color: color(r, 1), points: evaluations,
                                 width: 2.5, dots: true))
                if let initial = run.evaluations.first(where: { number($0["epoch"]) == 0 }).flatMap({ number($0["knn_top1"]) }) {
                    knn.append(.init(name: label(run, String(format: "initialisation baseline %.2f%%", 100 * initial)), color: "#777",
                                     points: [(0, initial), (run.iterationCount > 0 ? run.lastStep : 1, initial)], dashed: true))
                }
            }
            for (key, name, c) in [("top1", "top-1", 0), ("top5", "top-5", 1)] {
                let points = run.epochs.compactMap { e -> (Double, Double)? in
                    guard let epoch = number(e["epoch"]), let value = number(e[key]) else { return nil }
                    return (epoch, value)
                }
                if !points.isEmpty {
                    accuracy.append(.init(name: label(run, name), color: color(r, c), points: points, width: 2, dashed: c == 1, dots: true))
                }
            }
            // Gradient norms per layer: the first layer and the last block highlighted, the rest thin.
            let layers = run.layers
            let lastBlock = layers.last { $0.hasPrefix("blocks.") }
            for (index, layer) in layers.enumerated() {
                let points = run.gradientNorms[layer]?.all ?? []
                let highlighted = index == 0 || layer == lastBlock
                gradients.append(.init(name: label(run, layer + (index == 0 ? " (first layer)" : layer == lastBlock ? " (last block)" : "")),
                                       color: highlighted ? (index == 0 ? "#d62728" : "#1f77b4") : layerPalette[index % layerPalette.count],
                                       points: points, width: highlighted ? 1.8 : 0.8, opacity: highlighted ? 1 : 0.6))
            }
            for spike in run.spikes {
                spikes.append(.init(x: spike.step, y: spike.norm, label: label(run, "spike in \(spike.layer) at iteration \(Int(spike.step))")))
            }
        }
        if loss.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "Training loss", xLabel: "iteration", yLabel: "loss", series: loss).svg())
        }
        if knn.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "kNN accuracy: dense monitor per batch (smoothed), evaluation per epoch",
                                xLabel: "iteration", yLabel: "top-1", series: knn, percent: true).svg())
        }
        if gradients.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "Gradient norm per layer (log scale; ▲ spikes flagged by the monitor)", xLabel: "iteration",
                                yLabel: "‖g‖", series: gradients, logarithmic: true, markers: spikes).svg())
        }
        if accuracy.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "Held-out accuracy per epoch (top-5 dashed)", xLabel: "epoch", yLabel: "accuracy",
                                series: accuracy, percent: true, integerX: true).svg())
        }
        if rates.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "Learning rate (and 1 − m, scaled)", xLabel: "iteration", yLabel: "lr", series: rates).svg())
        }
        if speed.contains(where: { !$0.points.isEmpty }) {
            panels.append(Chart(title: "Throughput (and data-loader wait, scaled)", xLabel: "iteration", yLabel: "img/s", series: speed).svg())
        }
        var header = "<h1>\(escape(title))</h1>\n"
        for run in runs {
            header += "<section class=\"run\"><h2>\(escape(run.name))</h2>"
            if !run.info.isEmpty {
                var facts: [String] = []
                if let command = run.info["command"] { facts.append("mocov3-cl \(command)") }
                if let device = run.info["device"] { facts.append("device \(device)") }
                if let seconds = run.info["wall_seconds"].flatMap(Double.init) {
                    facts.append(String(format: "wall time %d min %02d s", Int(seconds) / 60, Int(seconds) % 60))
                }
                if let updated = run.info["updated"] { facts.append("updated \(updated)") }
                header += "<p>\(escape(facts.joined(separator: " · ")))</p>"
            }
            header += "<p>\(escape(summary(run)))</p>"
            if !run.configuration.isEmpty {
                let pairs = run.configuration.keys.sorted().map { "\(escape($0)) = \(escape(describe(run.configuration[$0]!)))" }
                header += "<details><summary>configuration</summary><p class=\"config\">\(pairs.joined(separator: " · "))</p></details>"
            }
            for warning in run.warnings { header += "<p class=\"warning\">⚠ \(escape(warning))</p>" }
            header += "</section>\n"
        }
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:1em auto;max-width:1240px;padding:0 10px;color:#222}
        h1{font-size:20px} h2{font-size:16px;margin:.4em 0} .config{font:12px monospace;color:#444}
        .warning{color:#b00} svg{width:100%;height:auto;display:block;margin:1.2em 0;border:1px solid #ddd}
        </style></head><body>
        \(header)
        \(panels.joined(separator: "\n"))
        <p style="color:#777;font-size:12px">mocov3-cl report · \(runs.map(\.iterationCount).reduce(0, +)) iterations plotted, decimated to the chart width (min and max kept per column)</p>
        </body></html>

        """
    }

    static func summary(_ run: Run) -> String {
        var parts: [String] = ["\(run.iterationCount) iterations"]
        if run.iterationCount > 0 {
            if !run.lastLoss.isNaN { parts.append(String(format: "last loss %.4f", run.lastLoss)) }
            // The median of the kept points (all of them up to 4096 buckets; their extremes beyond).
            let speeds = run.points("images_per_second").map(\.1).sorted()
            if !speeds.isEmpty { parts.append(String(format: "median %.0f img/s", speeds[speeds.count / 2])) }
        }
        if let knn = run.evaluations.last.flatMap({ number($0["knn_top1"]) }) { parts.append(String(format: "last kNN top-1 %.2f%%", 100 * knn)) }
        if let epoch = run.epochs.last, let top1 = number(epoch["top1"]) {
            parts.append(String(format: "last top-1 %.2f%%, top-5 %.2f%%, best %.2f%%", 100 * top1, 100 * (number(epoch["top5"]) ?? .nan),
                                100 * (number(epoch["best_top1"]) ?? .nan)))
        }
        let spikes = Set(run.spikes.map(\.step)).count
        if run.iterationCount > 0 { parts.append("\(spikes) iterations with gradient spikes") }
        return parts.joined(separator: "; ")
    }

    /// The monitor's layer order (cls_token, the patch projection, blocks in order, norm, heads).
    static func orderedLayers(_ norms: [String: Any]) -> [String] {
        func rank(_ name: String) -> (Int, Int) {
            if name.hasPrefix("patch_embed") { return (0, 0) }
            if name == "cls_token" { return (1, 0) }
            if name.hasPrefix("blocks.") { return (2, Int(name.dropFirst(7)) ?? 0) }
            if name == "norm" { return (3, 0) }
            return (4, name == "head" ? 0 : 1)
        }
        return norms.keys.sorted { rank($0) < rank($1) }
    }

    static func number(_ value: Any?) -> Double? {
        switch value {
        case let n as NSNumber: return n.doubleValue
        case let s as String: return Double(s)
        default: return nil
        }
    }

    static func describe(_ value: Any) -> String {
        if let n = value as? NSNumber { return n.stringValue }
        if let s = value as? String { return s }
        return String(describing: value)
    }

    /// `points` scaled so their maximum sits at `reference`'s (a second quantity on one axis).
    static func rescaled(_ points: [(Double, Double)], to reference: [(Double, Double)]) -> [(Double, Double)] {
        let top = reference.map(\.1).max() ?? 1, own = points.map(\.1).max() ?? 1
        guard own > 0, top > 0 else { return points }
        return points.map { ($0.0, $0.1 / own * top) }
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// One SVG chart with axes, ticks, a legend and decimated series.
struct Chart {
    struct Series {
        var name: String
        var color: String
        var points: [(Double, Double)]
        var width = 1.2
        var opacity = 1.0
        var dashed = false
        var dots = false
    }

    struct Marker {
        var x: Double
        var y: Double
        var label: String
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var series: [Series]
    var logarithmic = false
    var percent = false
    var markers: [Marker] = []
    /// Ticks on whole numbers only (epochs).
    var integerX = false

    static let width = 1200.0
    static let (left, right, bottom, plotHeight) = (70.0, 20.0, 46.0, 250.0)

    /// Legend entries laid out in rows above the plot: (series index, x, row).
    func legendLayout() -> [(Int, Double, Int)] {
        var layout: [(Int, Double, Int)] = []
        var (x, row) = (Self.left, 0)
        for (index, item) in series.enumerated() where !item.points.isEmpty {
            let itemWidth = 34 + Double(item.name.count) * 6.6
            if x + itemWidth > Self.width - Self.right, x > Self.left { (x, row) = (Self.left, row + 1) }
            layout.append((index, x, row))
            x += itemWidth
        }
        return layout
    }

    func svg() -> String {
        let legend = legendLayout()
        let rows = (legend.map(\.2).max() ?? -1) + 1
        let top = 30 + 16 * Double(rows) + 6
        let height = top + Self.plotHeight + Self.bottom
        let all = series.flatMap(\.points) + markers.map { ($0.x, $0.y) }
        let usable = logarithmic ? all.filter { $0.1 > 0 && $0.1.isFinite } : all.filter { $0.1.isFinite }
        guard !usable.isEmpty else { return "" }
        let xs = usable.map(\.0), ys = usable.map { logarithmic ? log10($0.1) : $0.1 }
        var (xMin, xMax) = (xs.min()!, xs.max()!)
        var (yMin, yMax) = (ys.min()!, ys.max()!)
        if xMax == xMin { (xMin, xMax) = (xMin - 1, xMax + 1) }
        if yMax == yMin { (yMin, yMax) = (yMin - 0.5, yMax + 0.5) }
        let pad = (yMax - yMin) * 0.05
        (yMin, yMax) = (yMin - pad, yMax + pad)
        let plotWidth = Self.width - Self.left - Self.right, plotHeight = Self.plotHeight
        func px(_ x: Double) -> Double { Self.left + (x - xMin) / (xMax - xMin) * plotWidth }
        func py(_ y: Double) -> Double {
            let value = logarithmic ? log10(max(y, 1e-30)) : y
            return top + (yMax - value) / (yMax - yMin) * plotHeight
        }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(Self.width)) \(Int(height))\" role=\"img\" "
            + "aria-label=\"\(RunReport.escape(title))\">\n"
        out += "<text x=\"\(Self.left)\" y=\"20\" font-size=\"15\" font-weight=\"600\">\(RunReport.escape(title))</text>\n"
        // Axes and ticks.
        out += "<rect x=\"\(Self.left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#999\"/>\n"
        for tick in Self.ticks(xMin, xMax, count: 8) where !integerX || tick == tick.rounded() {
            let x = px(tick)
            out += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", x, top, x, top + plotHeight)
            out += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%@</text>\n", x,
                          top + plotHeight + 16, Self.format(tick))
        }
        let yTicks = logarithmic ? Self.ticks(floor(yMin), ceil(yMax), count: 6).filter { $0 == $0.rounded() && $0 >= yMin && $0 <= yMax }
            : Self.ticks(yMin, yMax, count: 6)
        for tick in yTicks {
            let y = top + (yMax - tick) / (yMax - yMin) * plotHeight
            let text = logarithmic ? "1e\(Int(tick))" : percent ? String(format: "%.0f%%", 100 * tick) : Self.format(tick)
            out += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", Self.left, y, Self.left + plotWidth, y)
            out += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%@</text>\n", Self.left - 6, y + 4, text)
        }
        out += "<text x=\"\(Self.left + plotWidth / 2)\" y=\"\(height - 8)\" font-size=\"13\" text-anchor=\"middle\">\(RunReport.escape(xLabel))</text>\n"
        out += "<text transform=\"translate(16 \(top + plotHeight / 2)) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">"
            + "\(RunReport.escape(yLabel))</text>\n"
        // Series, decimated to two points per pixel column.
        for item in series where !item.points.isEmpty {
            let points = Self.decimated(item.points.filter { !logarithmic || $0.1 > 0 }, columns: Int(plotWidth), xMin: xMin, xMax: xMax)
            let path = points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            out += "<g class=\"series\" data-name=\"\(RunReport.escape(item.name))\" data-points=\"\(points.count)\">"
            if item.dots || points.count == 1 {
                for p in points { out += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%@\"/>", px(p.0), py(p.1), item.color) }
            }
            if points.count > 1 {
                out += "<polyline fill=\"none\" stroke=\"\(item.color)\" stroke-width=\"\(item.width)\" stroke-opacity=\"\(item.opacity)\""
                    + (item.dashed ? " stroke-dasharray=\"6 4\"" : "") + " points=\"\(path)\"/>"
            }
            out += "</g>\n"
        }
        for marker in markers {
            let (x, y) = (px(marker.x), py(marker.y))
            out += String(format: "<path class=\"spike\" d=\"M%.1f %.1f l-5 9 h10 z\" fill=\"#d62728\"><title>%@</title></path>\n",
                          x, y - 10, RunReport.escape(marker.label))
        }
        // Legend, in rows between the title and the plot.
        for (index, x, row) in legend {
            let item = series[index]
            let y = 30 + 16 * Double(row) + 10
            out += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"3\"%@/>", x, y - 4, x + 20,
                          y - 4, item.color, item.dashed ? " stroke-dasharray=\"6 4\"" : "")
            out += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%@</text>", x + 24, y, RunReport.escape(item.name))
        }
        return out + "</svg>"
    }

    /// At most two points per pixel column: each column's minimum and maximum, in x order, so a
    /// spike or a dip shorter than a pixel is still drawn.
    static func decimated(_ points: [(Double, Double)], columns: Int, xMin: Double, xMax: Double) -> [(Double, Double)] {
        guard points.count > 2 * columns, columns > 0 else { return points }
        var buckets = [[(Double, Double)]](repeating: [], count: columns)
        for p in points {
            let column = min(columns - 1, max(0, Int((p.0 - xMin) / (xMax - xMin) * Double(columns))))
            buckets[column].append(p)
        }
        return buckets.flatMap { bucket -> [(Double, Double)] in
            guard let low = bucket.min(by: { $0.1 < $1.1 }), let high = bucket.max(by: { $0.1 < $1.1 }) else { return [] }
            if low.0 == high.0 && low.1 == high.1 { return [low] }
            return low.0 <= high.0 ? [low, high] : [high, low]
        }
    }

    /// Round tick values between `low` and `high` (1, 2, 5 × 10ⁿ steps).
    static func ticks(_ low: Double, _ high: Double, count: Int) -> [Double] {
        let span = high - low
        guard span > 0, span.isFinite else { return [low] }
        let rough = span / Double(count)
        let magnitude = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? rough
        var values: [Double] = []
        var value = ceil(low / step) * step
        while value <= high + step * 1e-9 { values.append(value); value += step }
        return values
    }

    static func format(_ value: Double) -> String {
        if value == 0 { return "0" }
        if abs(value) >= 1e4 || abs(value) < 1e-3 { return String(format: "%.0e", value) }
        return value == value.rounded() ? String(Int(value)) : String(format: "%g", (value * 1e4).rounded() / 1e4)
    }
}
