//! Decoder LLM generation: chat messages in, streamed text out, with the KV cache inside tract.
//!
//! Who runs it: the enclave, on a decrypted LLM bundle. Secrets it holds: the plaintext weights (in the
//! [`Decoder`]), and per completion the conversation (prompt ids, KV cache, generated text). Like the rest of
//! this crate it does no I/O and holds no key: a caller drives a [`Completion`] one token at a time and decides
//! what to do with each piece of text (stream it, stop when the client is gone).
//!
//! The pieces: [`Decoder`] (tract, the KV-cache transform of tract-transformers), [`ChatFormat`] (the model's
//! tokenizer and chat template), [`Sampler`] (greedy, or temperature and top-p with a seed).

mod bundle;
mod chat;
mod decoder;
mod sampler;

pub use bundle::{GenerationConfig, LlmBundle, BUNDLE_MAGIC, ENTRY_NAMES};
pub use chat::{ChatFormat, ChatMessage, TextStream, TEMPLATE_FUEL};
pub use decoder::{Decoder, Generation};
pub use sampler::{argmax, Sampler, SamplingParams, MAX_TEMPERATURE};

use std::fmt;

use crate::Error;

/// What a completion may ask for.
#[derive(Clone)]
pub struct CompletionRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Completion tokens at most (the end-of-sequence token counts).
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Texts that end the completion where they appear; they are not part of it (OpenAI's `stop`).
    pub stop: Vec<String>,
}

impl fmt::Debug for CompletionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionRequest")
            .field("messages", &self.messages.len())
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop", &self.stop.len())
            .finish()
    }
}

/// Why a completion ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model emitted its end-of-sequence token, or a stop text appeared.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// One step of a completion: the token chosen and the text it completes (possibly empty: a character split
/// across tokens, or text held back because it may begin a stop text).
pub struct Step {
    /// The token id.
    pub token: u32,
    /// Text to give the client now.
    pub text: String,
    /// Set on the last step.
    pub finish: Option<FinishReason>,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("text_bytes", &self.text.len())
            .field("finish", &self.finish)
            .finish_non_exhaustive()
    }
}

/// A loaded LLM: the decoder and its chat format, checked against each other.
#[derive(Debug)]
pub struct Llm {
    decoder: Decoder,
    chat: ChatFormat,
    context_length: usize,
}

impl Llm {
    /// Puts a decoder and its chat format together; `context_length` is the model's trained context (the
    /// positions it was trained on). Refused when the tokenizer's vocabulary exceeds the logits'.
    pub fn new(decoder: Decoder, chat: ChatFormat, context_length: usize) -> Result<Self, Error> {
        if chat.vocabulary_size() > decoder.vocabulary() {
            return Err(Error::NotADecoder(format!(
                "the tokenizer has {} tokens but the model's logits only {}",
                chat.vocabulary_size(),
                decoder.vocabulary()
            )));
        }
        if u32::try_from(decoder.vocabulary()).is_err() || context_length == 0 {
            return Err(Error::NotADecoder(format!(
                "vocabulary {} or context length {context_length} out of range",
                decoder.vocabulary()
            )));
        }
        Ok(Llm {
            decoder,
            chat,
            context_length,
        })
    }

    /// Loads the bundle's decoder and chat format. The bundle (plaintext weights) stays the caller's to
    /// drop; the decoded protobuf copy is wiped before this returns.
    pub fn from_bundle(bundle: &LlmBundle) -> Result<Self, Error> {
        let config = bundle.config();
        let chat = ChatFormat::new(
            bundle.tokenizer_json(),
            bundle.chat_template(),
            &config.eos_token,
        )?;
        let decoder = Decoder::load(bundle.model_onnx())?;
        Self::new(decoder, chat, config.context_length)
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The tokenizer and template.
    pub fn chat(&self) -> &ChatFormat {
        &self.chat
    }

    /// The model's context length in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Starts a completion: renders and encodes the prompt, then [`Llm::complete_prompt`].
    pub fn complete(
        &self,
        request: &CompletionRequest,
        context_limit: usize,
    ) -> Result<Completion<'_>, Error> {
        if request.messages.is_empty() {
            return Err(Error::Prompt("there are no messages".into()));
        }
        let prompt = self.chat.prompt_ids(&request.messages)?;
        self.complete_prompt(prompt, request, context_limit)
    }

    /// Starts a completion of prompt ids already rendered and encoded: checks the request and that prompt plus
    /// `max_tokens` fit in `context_limit` (the caller's bound, from its memory budget; the model's own context
    /// length caps it). Nothing runs yet: the prompt is fed by the first [`Completion::step`].
    pub fn complete_prompt(
        &self,
        prompt: Vec<u32>,
        request: &CompletionRequest,
        context_limit: usize,
    ) -> Result<Completion<'_>, Error> {
        let sampler = Sampler::new(request.sampling)?;
        if request.max_tokens == 0 {
            return Err(Error::Prompt("max_tokens must be at least 1".into()));
        }
        if prompt.is_empty() {
            return Err(Error::Prompt("the prompt has no tokens".into()));
        }
        if let Some(ix) = request.stop.iter().position(String::is_empty) {
            return Err(Error::Prompt(format!("stop text {ix} is empty")));
        }
        let limit = context_limit.min(self.context_length);
        if prompt.len().saturating_add(request.max_tokens) > limit {
            return Err(Error::ContextTooLong {
                prompt_tokens: prompt.len(),
                max_tokens: request.max_tokens,
                limit,
            });
        }
        Ok(Completion {
            llm: self,
            generation: self.decoder.start()?,
            sampler,
            text: TextStream::default(),
            prompt_len: prompt.len(),
            pending_prompt: Some(prompt),
            next_input: None,
            produced: 0,
            max_tokens: request.max_tokens,
            stop: request.stop.clone(),
            held: String::new(),
            finished: None,
        })
    }
}

/// A completion in progress. Each [`Completion::step`] runs the model once (the first one over the whole
/// prompt) and picks one token; dropping it drops the KV cache, which is how a disconnected client stops it.
pub struct Completion<'a> {
    llm: &'a Llm,
    generation: Generation,
    sampler: Sampler,
    text: TextStream,
    pending_prompt: Option<Vec<u32>>,
    prompt_len: usize,
    next_input: Option<u32>,
    produced: usize,
    max_tokens: usize,
    stop: Vec<String>,
    /// Text decoded but not given out: it may be the start of a stop text.
    held: String,
    finished: Option<FinishReason>,
}

impl fmt::Debug for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("produced", &self.produced)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Completion<'_> {
    /// Tokens of the prompt (known before the first step).
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }

    /// Completion tokens chosen so far.
    pub fn completion_tokens(&self) -> usize {
        self.produced
    }

    /// Why it ended, once it has.
    pub fn finished(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Runs the model once and picks the next token. `Ok(None)` once finished.
    pub fn step(&mut self) -> Result<Option<Step>, Error> {
        if self.finished.is_some() {
            return Ok(None);
        }
        let logits = match (self.pending_prompt.take(), self.next_input.take()) {
            (Some(prompt), _) => self.generation.feed(&prompt)?,
            (None, Some(token)) => self.generation.feed(&[token])?,
            (None, None) => return Err(Error::Prompt("completion has nothing to feed".into())),
        };
        let token = self.sampler.pick(&logits)?;
        self.produced += 1;
        let chat = self.llm.chat();
        let mut finish = None;
        if token == chat.eos() {
            finish = Some(FinishReason::Stop);
            let tail = self.text.finish(chat)?;
            self.held.push_str(&tail);
        } else {
            let piece = self.text.push(chat, token)?;
            self.held.push_str(&piece);
            if self.produced >= self.max_tokens {
                finish = Some(FinishReason::Length);
                let tail = self.text.finish(chat)?;
                self.held.push_str(&tail);
            } else {
                self.next_input = Some(token);
            }
        }
        // A stop text: cut there and end.
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            finish = Some(FinishReason::Stop);
            self.next_input = None;
        }
        let text = if finish.is_some() {
            std::mem::take(&mut self.held)
        } else {
            // Give out all but the longest tail that could still begin a stop text.
            let keep = self
                .stop
                .iter()
                .map(|s| longest_prefix_suffix(&self.held, s))
                .max()
                .unwrap_or(0);
            let cut = self.held.len() - keep;
            let rest = self.held.split_off(cut);
            std::mem::replace(&mut self.held, rest)
        };
        self.finished = finish;
        Ok(Some(Step {
            token,
            text,
            finish,
        }))
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop` (on character boundaries).
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && stop[..n] == text[text.len() - n..]
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
