//! The chat request parser on malformed requests: each is refused with a 400 and a message that names what
//! is wrong; none panics. (The engine's own refusals, control tokens and context, are in `tests/it/llm.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn refused(body: &[u8]) -> ApiError {
    match parse_request(body) {
        Ok(_) => panic!(
            "accepted: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
        Err(e) => e,
    }
}

const OK: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn with(field: &str) -> String {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{field}}}"#)
}

fn msg(m: &str) -> String {
    format!(r#"{{"model":"m","messages":[{m}]}}"#)
}

#[test]
fn a_plain_request_parses_with_defaults() {
    let r = parse_request(OK.as_bytes()).unwrap();
    assert_eq!(r.model, "m");
    assert!(!r.stream);
    assert_eq!(r.completion.max_tokens, DEFAULT_MAX_TOKENS);
    assert_eq!(r.completion.sampling.temperature, 1.0);
    let r = parse_request(
        with(r#""stream":true,"max_tokens":5,"temperature":0,"seed":-1,"stop":"x","developer":1"#)
            .replace(r#","developer":1"#, "")
            .as_bytes(),
    )
    .unwrap();
    assert!(r.stream);
    assert_eq!(r.completion.max_tokens, 5);
    assert_eq!(r.completion.sampling.seed, u64::MAX);
    assert_eq!(r.completion.stop, vec!["x".to_owned()]);
    let r = parse_request(
        msg(r#"{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#)
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.completion.messages[0].role, "system");
    assert_eq!(r.completion.messages[0].content, "ab");
}

#[test]
fn fifty_kinds_of_malformed_requests_are_400_with_a_reason() {
    let big = "x".repeat(300);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "invalid chat request"),
        ("{".into(), "invalid chat request"),
        ("[]".into(), "invalid chat request"),
        ("null".into(), "invalid chat request"),
        ("42".into(), "invalid chat request"),
        (r#""text""#.into(), "invalid chat request"),
        (r#"{}"#.into(), "missing field"),
        (r#"{"model":"m"}"#.into(), "missing field `messages`"),
        (r#"{"messages":[]}"#.into(), "missing field `model`"),
        (r#"{"model":1,"messages":[]}"#.into(), "invalid type"),
        (
            r#"{"model":"m","messages":[]}"#.into(),
            "`messages` is empty",
        ),
        (r#"{"model":"m","messages":{}}"#.into(), "invalid type"),
        (r#"{"model":"m","messages":"hi"}"#.into(), "invalid type"),
        (
            msg(r#"{"role":"tool","content":"x"}"#),
            "messages[0].role `tool`",
        ),
        (
            msg(r#"{"role":"function","content":"x"}"#),
            "messages[0].role `function`",
        ),
        (msg(r#"{"role":"","content":"x"}"#), "messages[0].role ``"),
        (
            msg(r#"{"role":"USER","content":"x"}"#),
            "messages[0].role `USER`",
        ),
        (msg(r#"{"role":1,"content":"x"}"#), "invalid type"),
        (msg(r#"{"content":"x"}"#), "missing field `role`"),
        (msg(r#"{"role":"user"}"#), "missing field `content`"),
        (
            msg(r#"{"role":"user","content":null}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":5}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":[["nested"]]}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":[[{"type":"text","text":"x"}]]}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":{"type":"text"}}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}"#),
            "did not match any variant",
        ),
        (
            msg(r#"{"role":"user","content":[{"type":"image","text":"x"}]}"#),
            "only parts of type `text`",
        ),
        (
            msg(r#"{"role":"user","content":[{"type":"text"}]}"#),
            "only parts of type `text`",
        ),
        (
            msg(r#"{"role":"user","content":"x","tool_calls":[]}"#),
            "unknown field `tool_calls`",
        ),
        (
            msg(r#"{"role":"user","content":"x","extra":1}"#),
            "unknown field `extra`",
        ),
        (msg(r#""just text""#), "invalid type"),
        (
            with(r#""logit_bias":{"1":5}"#),
            "unknown field `logit_bias`",
        ),
        (with(r#""tools":[]"#), "unknown field `tools`"),
        (with(r#""unknown":true"#), "unknown field `unknown`"),
        (with(r#""n":2"#), "`n` is not supported"),
        (
            with(r#""frequency_penalty":0.5"#),
            "`frequency_penalty` is not supported",
        ),
        (
            with(r#""presence_penalty":-1"#),
            "`presence_penalty` is not supported",
        ),
        (with(r#""logprobs":true"#), "`logprobs` is not supported"),
        (with(r#""max_tokens":0"#), "`max_tokens` must be at least 1"),
        (with(r#""max_tokens":-5"#), "invalid value"),
        (with(r#""max_tokens":1.5"#), "invalid type"),
        (with(r#""max_tokens":"10""#), "invalid type"),
        (with(r#""max_tokens":1e30"#), "invalid type"),
        (with(r#""temperature":3"#), "`temperature`"),
        (with(r#""temperature":-0.1"#), "`temperature`"),
        (with(r#""temperature":"hot""#), "invalid type"),
        (with(r#""top_p":0"#), "`top_p`"),
        (with(r#""top_p":1.01"#), "`top_p`"),
        (with(r#""seed":"abc""#), "invalid type"),
        (with(r#""seed":1e100"#), "invalid type"),
        (
            with(r#""stop":["a","b","c","d","e"]"#),
            "`stop` has 5 texts",
        ),
        (with(r#""stop":"""#), "`stop`[0] must be 1 to 256 bytes"),
        (
            with(&format!(r#""stop":["{big}"]"#)),
            "`stop`[0] must be 1 to 256 bytes",
        ),
        (with(r#""stop":7"#), "did not match any variant"),
        (with(r#""stream":"yes""#), "invalid type"),
        (
            with(r#""stream_options":{"include_usage":true}"#),
            "`stream_options` needs",
        ),
        (
            with(r#""stream":true,"stream_options":{"other":1}"#),
            "unknown field `other`",
        ),
        (with(r#""model":"again""#), "duplicate field `model`"),
    ];
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for (body, want) in &cases {
        let e = refused(body.as_bytes());
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            e.message.contains(want),
            "{body}: {:?} lacks {want:?}",
            e.message
        );
    }
    // Bytes that are not UTF-8, inside a string and outside.
    let mut bad = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, b'"', b'}', b']', b'}']);
    assert!(refused(&bad).message.contains("invalid chat request"));
    assert!(refused(&[0xff; 16])
        .message
        .contains("invalid chat request"));
    // Deep nesting is refused by serde_json's recursion limit, not by the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(
        refused(msg(&format!(r#"{{"role":"user","content":{deep}}}"#)).as_bytes())
            .message
            .contains("invalid chat request")
    );
}

#[test]
fn errors_have_openais_shape() {
    let resp = error_response(&ApiError::bad_request("bad thing"));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "slow down");
    e.retry_after = Some(7);
    let resp = error_response(&e);
    assert_eq!(resp.headers()[RETRY_AFTER], "7");
}

#[test]
fn a_reader_that_stops_reading_is_given_up_on_and_a_gone_one_at_once() {
    let (tx, mut rx) = mpsc::channel::<Result<Reply, ApiError>>(2);
    let stalled = Duration::from_millis(50);
    assert!(send_or_give_up(&tx, Bytes::from_static(b"a"), stalled));
    assert!(send_or_give_up(&tx, Bytes::from_static(b"b"), stalled));
    // Full and nobody reads: false after the stall time, not before.
    let started = Instant::now();
    assert!(!send_or_give_up(&tx, Bytes::from_static(b"c"), stalled));
    assert!(started.elapsed() >= stalled);
    // A reader that frees a place in time: true.
    assert!(rx.try_recv().is_ok());
    assert!(send_or_give_up(&tx, Bytes::from_static(b"d"), stalled));
    // Gone: false at once.
    drop(rx);
    let started = Instant::now();
    assert!(!send_or_give_up(
        &tx,
        Bytes::from_static(b"e"),
        Duration::from_secs(60)
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
}
