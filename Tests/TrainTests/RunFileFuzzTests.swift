import Foundation
import Tensors
import Testing
import TestSupport
@testable import Train

/// Seeded mutation fuzzing of what `--resume` and `report` read back from a run folder
/// (TestSupport/Fuzzing.swift): a pretrain checkpoint (safetensors, its configuration JSON and
/// position metadata), `metrics.jsonl` and `config.json`.
@Suite struct RunFileFuzzTests {
    @Test func checkpointsOnResume() throws {
        let folder = try TinyRun.folder("fuzz-run")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = TinyRun.configuration
        configuration.epochs = 1
        configuration.warmupEpochs = 0.5
        _ = try Pretrainer(configuration: configuration, backend: HostBackend(), data: TinyRun.data(), runFolder: folder,
                           workers: 2, report: { _ in }).run()
        let seed = [UInt8](try Data(contentsOf: folder.appendingPathComponent("checkpoint_0001.safetensors")))
        // Mutations land in the header (names, shapes, metadata with the configuration JSON) as often
        // as in the tensors: keep the seed's data short by cutting what follows the header.
        let headerLength = Int(seed.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        let target = folder.appendingPathComponent("fuzz-checkpoint.safetensors")
        let report = fuzz("checkpoint", seeds: [seed, Array(seed.prefix(8 + headerLength + 64))],
                          count: FuzzBudget.inputs(1500), mustMention: "fuzz-checkpoint.safetensors") { bytes in
            try Data(bytes).write(to: target)
            let contents = try TrainingCheckpoint.read(target)
            #expect(contents.position.epoch >= 0)
        }
        #expect(report.accepted > 0 && report.rejected > 0)
    }

    @Test func metricsAndConfigurationInTheReport() throws {
        let folder = try TinyRun.folder("fuzz-report")
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Pretrainer(configuration: TinyRun.configuration, backend: HostBackend(), data: TinyRun.data(), runFolder: folder,
                           workers: 2, report: { _ in }).run()
        try JSONEncoder().encode(TinyRun.configuration).write(to: folder.appendingPathComponent("config.json"))
        let metrics = folder.appendingPathComponent("metrics.jsonl"), config = folder.appendingPathComponent("config.json")
        let seeds = [[UInt8](try Data(contentsOf: metrics)), [UInt8](try Data(contentsOf: config))]
        let page = folder.appendingPathComponent("fuzz.html")
        for (index, (mutated, kept)) in [(metrics, config), (config, metrics)].enumerated() {
            try Data(seeds[1 - index]).write(to: kept)
            let report = fuzz(mutated.lastPathComponent, seeds: [seeds[index]], count: FuzzBudget.inputs(1500),
                              mustMention: folder.lastPathComponent) { bytes in
                try Data(bytes).write(to: mutated)
                let run = try RunReport.load(folder)
                try RunReport.write([run], title: "fuzz", to: page)
            }
            #expect(report.inputs > 0)
        }
    }
}
