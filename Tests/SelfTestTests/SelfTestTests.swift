import CLBackend
import Foundation
import SelfTest
import Tensors
import Testing
import TestSupport

/// The self-test's own machinery: it covers the whole protocol, and it fails, naming the op, on
/// each kind of fault a kernel can have.
@Suite struct SelfTestMachineryTests {
    /// Every requirement of `Backend` but the transfers, read from its source.
    static func protocolOperations() throws -> Set<String> {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Tensors/Backend.swift")
        let text = try String(contentsOf: source, encoding: .utf8)
        let start = try #require(text.range(of: "public protocol Backend"))
        let end = try #require(text.range(of: "\n}\n", range: start.upperBound..<text.endIndex))
        let body = text[start.upperBound..<end.lowerBound]
        let names = try Regex(#"func (\w+)\("#)
        return Set(body.matches(of: names).map { String($0.output[1].substring!) })
            .subtracting(["upload", "download", "synchronize"])
    }

    /// At the odd sizes: both sizes run the same list (the real one takes a debug build 40 s to set up).
    @Test func theCatalogCoversEveryOpOfTheProtocol() throws {
        let operations = try Self.protocolOperations()
        #expect(operations.count > 30, "parsed \(operations.count) ops from Backend.swift")
        for sizes in [CatalogSizes.odd] {
            var catalog = OpCatalog(sizes: sizes)
            let covered = Set(try catalog.checks().map(\.operation))
            #expect(operations.subtracting(covered).isEmpty, "\(sizes.name): no check for \(operations.subtracting(covered).sorted())")
            #expect(covered.subtracting(operations).isEmpty, "\(sizes.name): checks name unknown ops \(covered.subtracting(operations).sorted())")
        }
    }

    @Test func theHostAgreesWithItself() throws {
        var selfTest = SelfTest(device: HostBackend())
        selfTest.sizes = [.odd]
        let lines = try selfTest.run()
        #expect(lines.count > 40)
        #expect(lines.filter { !$0.passed }.map { "\($0.operation) \($0.label): \($0.problems)" } == [])
        #expect(lines.filter { $0.operation == "moco step" }.count == 2)
    }

    /// A "device" that is a second host backend whose op misbehaves in one way.
    func run(_ fault: @escaping (any Backend, Tensor) throws -> Void) throws -> OpCheckResult {
        let device = HostBackend(), reference = HostBackend()
        var generator = SplitMix64(seed: 1)
        let x = randomValues(37, using: &generator)
        let check = OpCheck("gelu", "(37)", inputs: [.float(x, shape: [37])], outputs: [OpOutput(shape: [37])]) { b, i, o in
            try b.gelu(output: o[0], input: i[0])
            if b === device { try fault(b, o[0]) }
        }
        return try check.compare(device, reference: reference)
    }

    @Test func aWrongValueFails() throws {
        let result = try run { b, output in
            var values = try b.download(output)
            values[17] *= 1.001
            try b.upload(values, to: output)
        }
        #expect(!result.passed)
        #expect(result.worst?.comparison.index == 17)
    }

    @Test func anElementLeftUnwrittenFails() throws {
        let result = try run { b, output in
            var values = try b.download(output)
            values[36] = .nan
            try b.upload(values, to: output)
        }
        #expect(!result.passed)
        #expect(result.worst?.comparison.ratio == .infinity)
    }

    @Test func aWritePastTheEndFails() throws {
        let result = try run { b, output in
            let past = Tensor(storage: output.storage, shape: [38])   // the output and the first canary
            var values = try b.download(past)
            values[37] = 0
            try b.upload(values, to: past)
        }
        #expect(result.comparisons.allSatisfy { $0.passed })
        #expect(!result.passed)
        #expect(result.problems.first?.contains("wrote past its end") == true)
    }

    @Test func theOpsFilterSelectsByName() throws {
        var selfTest = SelfTest(device: HostBackend(), reference: HostBackend())
        selfTest.sizes = [.odd]
        selfTest.stepChecks = []
        selfTest.operations = ["knnVote"]
        let lines = try selfTest.run()
        #expect(lines.map(\.operation) == ["knnVote"])
        #expect(lines.allSatisfy { $0.passed })
    }
}

/// `selftest` on the OpenCL test device (PoCL in CI): every op and both MoCo steps agree with the
/// host, with either GEMM provider.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct SelfTestOnOpenCLTests {
    @Test(arguments: [GEMMProvider.kernel, .clblast])
    func everyCheckPasses(provider: GEMMProvider) throws {
        // The odd sizes here (the real ones run in the bundle test, `selftest --device cpu0`).
        var selfTest = SelfTest(device: try TestDevices.backend(provider: provider))
        selfTest.sizes = [.odd]
        if provider == .clblast { selfTest.operations = ["gemm", "moco step"] }
        let lines = try selfTest.run()
        let failed = lines.filter { !$0.passed }
        #expect(failed.isEmpty, "\(failed.map { "\($0.operation) \($0.label): \($0.problems)" })")
        #expect(lines.count > (provider == .kernel ? 40 : 7))
    }
}
