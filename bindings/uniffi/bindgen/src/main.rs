//! `uniffi-bindgen`: uniffi's own command line, pinned to the uniffi version
//! of the bindings (generated code and scaffolding must come from one
//! version). See scripts/test-kotlin.sh for how it is run.

fn main() {
    uniffi::uniffi_bindgen_main()
}
