//! The LLM bundle parser on arbitrary bytes (the plaintext of a sealed LLM: the model owner's input, untrusted
//! by clients and operator): never panics, and a bundle it accepts is canonical (building it again from its
//! entries gives the same bytes, so one set of files has one digest).
#![no_main]

use cloister_enclave::inference::llm::LlmBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = LlmBundle::parse(data) {
        let _ = bundle.config();
        let template = bundle.chat_template();
        let rebuilt = LlmBundle::build(
            bundle.model_onnx(),
            bundle.tokenizer_json(),
            template.as_bytes(),
            bundle.generation_json(),
        );
        assert_eq!(&rebuilt[..], data, "an accepted bundle is not canonical");
    }
});
