import ArgumentParser
import Datasets
import Foundation
import Model
import Train

/// `mocov3-cl export`: a checkpoint's weights for timm or for the reference's code.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's weights for timm (the backbone, as convert_to_deit.py) or the reference's code (module.*).",
        discussion: """
        --format timm writes the backbone under timm's ViT names with the architecture in the metadata (and \
        head.* for a lincls or finetune checkpoint); README, "export", shows the timm lines that load it. \
        Options timm's ViT cannot express (ViT-BN, global average pooling, no position embedding) are noted \
        on stderr and in the file's metadata. --format moco writes every module.* tensor of a pretrain checkpoint.
        """)

    @Option(help: "A pretrain, lincls or finetune checkpoint (or any weights file `lincls --pretrained` reads, for timm).")
    var checkpoint: String
    @Option(help: "timm or moco.") var format: String
    @Option(help: "The encoder of a pretrain checkpoint to export for timm: base [default] or momentum.") var encoder = "base"
    @Option(help: "The .safetensors file to write.") var output: String
    @Flag(help: "Replace --output if it exists.") var force = false

    func validate() throws {
        guard WeightsExport.Format(rawValue: format) != nil else {
            throw ValidationError("--format must be one of \(WeightsExport.Format.allCases.map(\.rawValue).joined(separator: ", ")), got '\(format)'")
        }
        guard ["base", "momentum"].contains(encoder) else { throw ValidationError("--encoder must be base or momentum, got '\(encoder)'") }
    }

    func run() throws {
        let url = URL(fileURLWithPath: output)
        let result = try WeightsExport.export(checkpoint: URL(fileURLWithPath: checkpoint), format: WeightsExport.Format(rawValue: format)!,
                                              momentumEncoder: encoder == "momentum", to: url, overwrite: force)
        for note in result.notes { FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
        print("wrote \(result.tensors) tensors to \(url.path) (\(format))")
    }
}

/// `mocov3-cl embed`: the features of every image of a split, with labels (and paths).
struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the evaluation-transform features of every image of a split, with labels (and file paths for folders).")

    @Option(help: "Any weights file `lincls --pretrained` reads (a pretrain, lincls or finetune checkpoint, or a timm ViT).")
    var checkpoint: String
    @Option(help: "The data: fashion-mnist [default], an image folder, or a CIFAR binary folder.") var data: String?
    @Option(help: "The split: train or val (the held-out split) [val].") var split = "val"
    @Option(help: "The encoder of a pretrain checkpoint: base [default] or momentum.") var encoder = "base"
    @Option(help: "The attention heads of a file whose metadata does not say.") var heads: Int?
    @Option(name: [.customShort("b"), .long], help: "The batch size of the feature extraction [256].") var batchSize = 256
    @Option(help: "Also store the first N transformed images as `inputs` (for checking another tool's features).")
    var saveInputs = 0
    @Option(help: "The .safetensors file to write.") var output = "features.safetensors"
    @Flag(help: "Replace --output if it exists.") var force = false
    @OptionGroup var deviceOptions: DeviceOptions

    func validate() throws {
        guard ["train", "val"].contains(split) else { throw ValidationError("--split must be train or val, got '\(split)'") }
        guard ["base", "momentum"].contains(encoder) else { throw ValidationError("--encoder must be base or momentum, got '\(encoder)'") }
        guard batchSize >= 1, saveInputs >= 0 else { throw ValidationError("--batch-size must be ≥ 1 and --save-inputs ≥ 0") }
    }

    func run() throws {
        let url = URL(fileURLWithPath: output)
        if FileManager.default.fileExists(atPath: url.path), !force {
            throw ValidationError("\(url.path) exists; pass --force to replace it, or choose another --output")
        }
        let vit = try PretrainedViT(file: SafetensorsFile(contentsOf: URL(fileURLWithPath: checkpoint)), heads: heads,
                                    prefix: encoder == "momentum" ? MoCoParameters.momentumEncoderPrefix : nil)
        let splits = try DatasetSource.open(data == "fashion-mnist" ? nil : data)
        guard let dataset = split == "train" ? splits.train : splits.test else {
            throw ValidationError("\(splits.name) has no held-out split (a val/ folder); use --split train")
        }
        let backend = try deviceOptions.makeBackend()
        let extractor = try FeatureExtractor(
            layout: vit.layout, parameterTensor: backend.makeFlatTensor(vit.parameters), bufferTensor: backend.makeFlatTensor(vit.buffers),
            backend: backend, batchSize: batchSize)
        let display = ProgressDisplay(printFrequency: 1, epochs: 1)
        display.log("mocov3-cl embed on \(backend.name): \(dataset.summary)")
        let start = Date()
        let result = try Embeddings.compute(extractor: extractor, dataset: dataset, keepInputs: saveInputs,
                                            workers: ProcessInfo.processInfo.activeProcessorCount) { done, total in
            if display.isTerminal {
                print(String(format: "\r\u{1B}[2K%d/%d images, %.0f img/s", done, total, Double(done) / max(Date().timeIntervalSince(start), 1e-9)),
                      terminator: "")
                fflush(stdout)
            }
        }
        if display.isTerminal { print("") }
        for skipped in result.skipped.prefix(20) { display.log("skipped \(skipped)") }
        try Embeddings.write(result, config: vit.layout.config, dataset: dataset,
                             metadata: ["source": checkpoint, "encoder": encoder, "split": split, "data": splits.name], to: url)
        display.log(String(format: "wrote %d features (%d wide) to %@ in %.1f s", result.indices.count, vit.layout.config.embedDim,
                           url.path, Date().timeIntervalSince(start)))
    }
}

/// `mocov3-cl report`: one page of charts from one or more run folders.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw one or more run folders' metrics as a self-contained HTML page (several runs overlaid).",
        discussion: "Every pretrain, lincls and finetune run also rewrites its own report.html after each epoch.")

    @Argument(help: "Run folders (each holding metrics.jsonl).") var runs: [String]
    @Option(help: "The HTML file to write [report.html here; RUN/report.html for one run].") var output: String?
    @Option(help: "The page title.") var title: String?

    func run() throws {
        guard !runs.isEmpty else { throw ValidationError("name at least one run folder") }
        let loaded = try runs.map { try RunReport.load(URL(fileURLWithPath: $0)) }
        for run in loaded { for warning in run.warnings { FileHandle.standardError.write(Data("warning: \(run.name): \(warning)\n".utf8)) } }
        let url = URL(fileURLWithPath: output ?? (runs.count == 1 ? URL(fileURLWithPath: runs[0]).appendingPathComponent("report.html").path
                                                                   : "report.html"))
        try RunReport.write(loaded, title: title ?? "mocov3-cl: " + loaded.map(\.name).joined(separator: ", "), to: url)
        print("wrote \(url.path) (\(loaded.map(\.iterationCount).reduce(0, +)) iterations from \(loaded.count) run(s))")
    }
}
