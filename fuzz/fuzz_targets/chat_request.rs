//! The enclave's OpenAI chat-request parser (`POST /v1/chat/completions`) on arbitrary bodies: never
//! panics, and every refusal is a 4xx (the client's fault, in OpenAI's error shape), never a 5xx, with a
//! message that stays short whatever the body holds (no echo of a 10 MB field).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match cloister_enclave::server::check_chat_request(data) {
        Ok(max_tokens) => assert!(max_tokens >= 1),
        Err((status, message)) => {
            assert!((400..500).contains(&status), "{status}: {message}");
            assert!(
                message.len() <= 4096,
                "a refusal echoes the request: {} bytes",
                message.len()
            );
        }
    }
});
