// swift-tools-version:5.9
//
// The Swift SDK for BlipMQ: the Swift bindings uniffi generates from the
// native library (`bindings/uniffi`), used as they are, plus `Subscription`
// (Sources/BlipMQ/Subscription.swift, hand-written), which tells an
// `onDrop` closure of the messages the broker discarded. The other files
// under Sources/ are generated: BlipMQ.swift, BlipMQFFI.h and the module
// map by scripts/test-kotlin.sh (BLIPMQ_UNIFFI_WRITE=1 rewrites them),
// Errors.swift by scripts/regen-codegen.sh; CI checks them against a fresh
// generation.
//
// The package links the native library `libblipmq_uniffi`; build it first:
//
//     cargo build --release -p blipmq-uniffi
//
// and point BLIPMQ_LIB_DIR at the folder it is in when it is not the
// repository's target/release. For iOS, build the `staticlib` for the
// device targets and wrap it in an XCFramework instead.
//
// This manifest has not been built here: the project's machines have no
// Swift toolchain (see README.md).
import Foundation
import PackageDescription

let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // swift/
    .deletingLastPathComponent()  // uniffi/
    .deletingLastPathComponent()  // bindings/
    .deletingLastPathComponent()
let libraryDir = ProcessInfo.processInfo.environment["BLIPMQ_LIB_DIR"]
    ?? repositoryRoot.appendingPathComponent("target/release").path

let package = Package(
    name: "BlipMQ",
    platforms: [.macOS(.v10_15), .iOS(.v13)],
    products: [
        .library(name: "BlipMQ", targets: ["BlipMQ"]),
    ],
    targets: [
        // The C declarations of the native library: the generated header and
        // module map.
        .systemLibrary(name: "BlipMQFFI", path: "Sources/BlipMQFFI"),
        // The generated Swift API: async methods, the BlipMqError enum.
        .target(
            name: "BlipMQ",
            dependencies: ["BlipMQFFI"],
            path: "Sources/BlipMQ",
            linkerSettings: [
                .linkedLibrary("blipmq_uniffi"),
                .unsafeFlags(["-L", libraryDir]),
            ]
        ),
    ]
)
