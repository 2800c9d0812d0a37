//! From chat messages to prompt token ids, and from generated ids back to text as it streams.
//!
//! The tokenizer (`tokenizer.json`) and the chat template (Jinja) come from the model bundle: sealed and
//! digest-bound with the weights, so a client's model pin covers them. They are still model-owner input, as
//! untrusted as the weights: the template renders in minijinja's sandbox (no file, no network, no Python)
//! with a fuel limit ([`TEMPLATE_FUEL`]), so a template cannot loop for ever.

use std::fmt;

use minijinja::Environment;
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::Error;

/// Instructions a template may execute for one prompt. SmolLM2's template spends about 30 per message; a
/// loop that does not end runs out of fuel in milliseconds.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// One message of a conversation, as the chat template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text. Confidential: the `Debug` of the types that carry a conversation does not print it.
    pub content: String,
}

/// The model's tokenizer and chat template: prompts in, text out.
pub struct ChatFormat {
    tokenizer: Tokenizer,
    template: String,
    /// The special tokens' texts (`<|im_start|>`, …): a message that contains one is refused, since the
    /// tokenizer would turn it into the control token and let a user forge a turn of another role.
    specials: Vec<String>,
    eos: u32,
}

impl fmt::Debug for ChatFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatFormat")
            .field("vocabulary", &self.tokenizer.get_vocab_size(true))
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl ChatFormat {
    /// Loads `tokenizer.json` and the template, and checks that the template renders a one-message
    /// conversation and that `eos_token` is one token of the vocabulary.
    pub fn new(tokenizer_json: &[u8], template: &str, eos_token: &str) -> Result<Self, Error> {
        let tokenizer = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let eos = tokenizer.token_to_id(eos_token).ok_or_else(|| {
            Error::Tokenizer(format!(
                "end-of-sequence token `{eos_token}` is not in the vocabulary"
            ))
        })?;
        let specials = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        let format = ChatFormat {
            tokenizer,
            template: template.to_owned(),
            specials,
            eos,
        };
        format.render(
            &[ChatMessage {
                role: "user".into(),
                content: "hello".into(),
            }],
            true,
        )?;
        Ok(format)
    }

    /// The end-of-sequence id: generation stops after it.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The vocabulary size, special tokens included.
    pub fn vocabulary_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The prompt text of a conversation, by the model's template. A message holding a special token's text
    /// is refused (naming the message, not quoting it).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        for (ix, m) in messages.iter().enumerate() {
            if let Some(special) = self
                .specials
                .iter()
                .find(|s| m.content.contains(s.as_str()))
            {
                return Err(Error::Prompt(format!(
                    "message {ix} contains the control token `{special}`, which a message may not carry"
                )));
            }
        }
        let mut env = Environment::new();
        // As transformers renders chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.render_str(
            &self.template,
            minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt },
        )
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// The token ids of a prompt text, without added special tokens (the template wrote them).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// [`ChatFormat::render`] then [`ChatFormat::encode`].
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, Error> {
        self.encode(&self.render(messages, true)?)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(format!("decoding: {e}")))
    }
}

/// Turns generated ids into text as they come, holding back a token that ends inside a UTF-8 character
/// (byte-level BPE splits characters across tokens) until the character is complete.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Ids before this one are decoded and given out; decoding restarts a few ids back, at `prefix`, so that
    /// a token's leading space decodes as in context.
    prefix: usize,
    read: usize,
}

impl fmt::Debug for TextStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextStream")
            .field("tokens", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl TextStream {
    /// Adds one id; returns the text it completes (empty while a character is incomplete).
    pub fn push(&mut self, format: &ChatFormat, id: u32) -> Result<String, Error> {
        self.ids.push(id);
        let before = format.decode(&self.ids[self.prefix..self.read])?;
        let now = format.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let text = now.get(before.len()..).unwrap_or_default().to_owned();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(text)
        } else {
            Ok(String::new())
        }
    }

    /// The text still held back at the end (an incomplete character, decoded with its replacement mark).
    pub fn finish(&mut self, format: &ChatFormat) -> Result<String, Error> {
        let before = format.decode(&self.ids[self.prefix..self.read])?;
        let now = format.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_owned())
    }
}
