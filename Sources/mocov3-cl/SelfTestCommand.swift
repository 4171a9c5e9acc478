import ArgumentParser
import CLBackend
import Foundation
import SelfTest
import Tensors

/// `mocov3-cl selftest`: every op of the tensor protocol and whole MoCo iterations on a device,
/// against the host backend. Exits non-zero on any mismatch, naming the op.
struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check every op and a whole MoCo step on a device against the host backend.",
        discussion: """
            Runs each op of the tensor protocol, forward and backward, on seeded random inputs at the \
            sizes of a ViT-S/16 step and at odd sizes (NaN-poisoned outputs, canary tails), then two \
            short MoCo v3 trainings, and compares everything with the host backend. Prints one line per \
            check and the worst error per op; exits with status 1 if anything disagrees. Run it on a \
            new GPU or driver before training on it.
            """,
        aliases: ["check"])

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "Only the ops whose names contain one of these comma-separated words (e.g. gemm,attention,'moco step').")
    var ops: String?

    @Flag(help: "Only the odd sizes and the MoCo steps (seconds instead of a minute on a CPU).")
    var quick = false

    @Option(help: "The OpenCL kernel variants: cpu or gpu; without it, the device class's. 'gpu' on an OpenCL CPU device (PoCL) checks the work-group kernels a GPU runs.")
    var kernels: String?

    func run() throws {
        let backend = try deviceOptions.makeBackend()
        guard backend.name != "host" else {
            throw ValidationError("--device host would compare the host backend with itself; "
                + "pick an OpenCL device from `mocov3-cl devices` (cpu0, gpu0, …)")
        }
        if let kernels {
            guard let variant = CLBackend.KernelVariant(rawValue: kernels) else {
                throw ValidationError("--kernels must be cpu or gpu, got '\(kernels)'")
            }
            guard let device = backend as? CLBackend else {
                throw ValidationError("--kernels applies to OpenCL devices, not \(backend.name)")
            }
            device.kernelVariant = variant
        }
        var selfTest = SelfTest(device: backend)
        if quick { selfTest.sizes = [.odd] }
        if let ops {
            selfTest.operations = ops.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let variant = (backend as? CLBackend).map { ", \($0.kernelVariant.rawValue.uppercased())-class kernels, GEMM \($0.gemmProvider.rawValue)" } ?? ""
        print("selftest: \(backend.name) against host, \(selfTest.sizes.map(\.name).joined(separator: " and ")) sizes\(variant)")
        print(row("result", "op", "case", "err/tol", "err/scale", "time"))
        let lines = try selfTest.run { line in
            print(row(line.passed ? "ok" : "MISMATCH", line.operation, line.label, format(line.ratio, "%.3f"),
                      format(line.scaledError, "%.1e"), String(format: "%.1f ms", line.seconds * 1e3)))
            for problem in line.problems { print("          \(problem)") }
        }
        guard !lines.isEmpty else {
            throw ValidationError("--ops \(ops ?? "") matches no op; names are those of `Backend` (gemm, layerNormBackward, …) and 'moco step'")
        }

        print("\nworst error per op (err/tol: error over tolerance, ≤ 1 passes; err/scale: max|device − host| / max|host|):")
        let summary = SelfTest.summary(lines)
        for entry in summary {
            print("  " + [pad(entry.operation, 24), pad("\(entry.cases) case\(entry.cases == 1 ? "" : "s")", 9),
                          pad(format(entry.ratio, "%.3f"), 9), format(entry.scaledError, "%.1e"),
                          entry.passed ? "" : "  MISMATCH"].joined())
        }
        let failed = summary.filter { !$0.passed }.map(\.operation)
        if failed.isEmpty {
            print("\(backend.name): all \(lines.count) checks agree with the host backend")
        } else {
            fflush(stdout)   // the table first, then the verdict, when both go to one file
            FileHandle.standardError.write(Data(("selftest: \(backend.name) disagrees with the host backend in "
                + "\(failed.joined(separator: ", ")); do not train on this device/driver as it is "
                + "(the lines above name the worst elements)\n").utf8))
            throw ExitCode(1)
        }
    }

    private func row(_ result: String, _ op: String, _ label: String, _ ratio: String, _ relative: String,
                     _ time: String) -> String {
        pad(result, 10) + pad(op, 24) + pad(label, 66) + pad(ratio, 9) + pad(relative, 11) + time
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }

    private func format(_ value: Double, _ pattern: String) -> String {
        value.isFinite ? String(format: pattern, value) : "inf"
    }
}
